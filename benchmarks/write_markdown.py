"""Write BENCHMARKS.md from benchmarks/results/*.json (the last step of `make bench`).

Everything above the notes marker is regenerated from the JSON files; the notes below it (the reading of the
figures, written by a person) are kept as they are.
"""

from __future__ import annotations

import json

from common import RESULTS, ROOT

MARKER = "<!-- notes: kept when this file is regenerated -->"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def table(*columns: str) -> list[str]:
    """The two head lines of a markdown table with these columns."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def ok(flag: bool | None) -> str:
    return "meets" if flag else "**misses**"


def header(record: dict) -> str:
    m = record["machine"]
    if isinstance(m, str):  # records written before the machine was recorded as a dict
        return f"_{record['date']} · {m} · `{record['command']}` · commit `{record.get('commit', '?')}`_"
    return (f"_{record['date']} · {m['machine']}, {m['cpus']} CPUs, torch {m['torch']} ({m['threads']} threads), "
            f"CUDA {'yes' if m['cuda'] else 'no'} · `{record['command']}` · commit `{record.get('commit', '?')}`_")


def training(r: dict) -> list[str]:
    lines = ["## Training speed (`speed_training.py`)", "", header(r), "",
             f"Batch {r['batch']} x {r['patch']}^2 px, {r['steps_per_block']} steps per block, {r['repeats']} interleaved "
             "repeats (compile: one block after them, once compiled); medians of the per-step wall time.", "",
             *table("model", "stainless s/step", "plain PyTorch s/step", "ratio (target <= 1.05)", "bf16-mixed",
                    "channels_last", "compile")]
    for job, j in r["jobs"].items():
        s = j["median_step_s"]
        speed = j["switch_speedup_vs_default"]
        lines.append(f"| {job} | {s['stainless']:.3f} | {s['plain']:.3f} | {j['overhead_ratio']:.3f} ({ok(j['overhead_ok'])}) | "
                     f"x{speed.get('bf16-mixed', float('nan')):.2f} | x{speed.get('channels_last', float('nan')):.2f} | "
                     + (f"x{speed['compile']:.2f}" if "compile" in speed else f"failed: {j['compile_error']}") + " |")
    lines += ["", "Switch columns: speed-up of the step over the default (above 1 is faster).", "",
              *table("model", "model consumes samples/s", "loader delivers, 0 / 1 / 2 workers",
                     "loader / model (target >= 2)")]
    for job, j in r["jobs"].items():
        d = j["loader_samples_per_s"]
        ratio = j["loader_to_model_ratio"]
        lines.append(f"| {job} | {j['model_samples_per_s']:.1f} | {d['0']:.0f} / {d['1']:.0f} / {d['2']:.0f} | "
                     f"x{ratio['0']:.0f} / x{ratio['1']:.0f} / x{ratio['2']:.0f} |")
    return lines + [""]


def inference(r: dict) -> list[str]:
    lines = ["## Tiled inference (`speed_inference.py`)", "", header(r), "",
             f"{r['image']}^2 image, {r['n_tiles']} tiles of {r['tile']}^2 (overlap {r['overlap']}), batch {r['batch']}: "
             f"tiled {min(r['tiled_s']):.2f}-{max(r['tiled_s']):.2f} s vs bare network {min(r['bare_s']):.2f}-"
             f"{max(r['bare_s']):.2f} s; overhead of the medians **{r['overhead']:+.1%}** (target <= 10%: {ok(r['overhead_ok'])}).", "",
             *table("image", "resident before, MB", "peak, MB", "growth, MB", "of which image-sized arrays, MB",
                    "working memory, MB")]
    for m in r["memory"]:
        lines.append(f"| {m['size']}^2 | {m['rss_before_mb']:.0f} | {m['rss_peak_mb']:.0f} | {m['growth_mb']:.0f} | "
                     f"{m['image_sized_arrays_mb']:.0f} | {m['working_mb']:.0f} |")
    return lines + ["", "Each size runs in a fresh process; the image-sized arrays are the output and the accumulator "
                    "of blended tiles, which any whole-image prediction needs.", ""]


def video(r: dict) -> list[str]:
    lines = ["## Video analysis (`speed_video.py`)", "", header(r), "",
             *table("frames", "cells", "segmentation s", "whole analysis s", "overhead", "without overlay video",
                    "analysis fps", "overhead of each repeat")]
    for run in r["runs"].values():
        repeats = ", ".join(f"{o:+.0%}" for o in run.get("overhead_repeats", []))
        lines.append(f"| {run['frames']} | {run['cells']} | {run['segmentation_s']:.1f} | {run['analysis_s']:.1f} | "
                     f"{run['overhead']:+.0%} | {run['overhead_without_overlay_video']:+.0%} | {run['analysis_fps']:.1f} | "
                     f"{repeats or 'n/a'} |")
    scaling = ", ".join(f"{k.split('_')[0]} frames x{v:.2f}" for k, v in r["time_per_frame_relative_to_shortest"].items())
    return lines + ["", "Times are medians of three interleaved repeats; an overhead is the median of each repeat's analysis "
                    "against the segmentation timed just before it.", "",
                    f"Overhead target <= 15% (every row): {ok(r['overhead_ok'])}. Time per frame relative to the shortest video "
                    f"(1.00 = linear): {scaling}.", ""]


def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def real_data(r: dict) -> list[str]:
    lines = ["## Virtual labeling on real data (`real_data.py`)", "", header(r), "",
             f"One field per set, split into regions (test = last quarter of the longer axis); `experiment=virtual_labeling` "
             f"(pix2pix) and the same U-Net trained with L1 only, {r['epochs']} epochs of 64 generator steps each, once per "
             "seed; scored on the held-out region by `evaluate.py` (nuclei: detected in the target, no labels); mean ± sd "
             "over the seeds. Bold: pix2pix beats every baseline on that metric (on the means).", "",
             *table("data", "method", "SSIM", "PSNR dB", "Pearson r", "LPIPS", "nuclei F1", "hallucinated", "missed")]
    for name, d in r["virtual_labeling"].items():
        for method, s in d["table"].items():
            cells = []
            for metric in ("ssim", "psnr", "pearson", "lpips", "nuclei_f1"):  # LPIPS: n/a without its weights
                text = _ms(s[metric], 2 if metric == "psnr" else 3) if metric in s else "n/a"
                bold = method == "pix2pix" and d["beats_every_baseline"].get(metric)
                cells.append(f"**{text}**" if bold else text)
            counts = [f"{s[k]['mean']:.1f}" if k in s else "" for k in ("hallucinated", "missed")]
            lines.append(f"| {name} ({d['task']}) | {method} | {' | '.join(cells)} | {' | '.join(counts)} |")
    lines += ["", *table("data", "input-target r", "pix2pix beats L1-only on (means)", "generator steps",
                         "train s: pix2pix / L1-only (mean)")]
    for name, d in r["virtual_labeling"].items():
        wins = [m for m, won in d.get("pix2pix_beats_l1_only", {}).items() if won]
        seconds = {k: sum(t["train_s"] for t in v) / len(v) for k, v in d["training"].items() if v}
        lines.append(f"| {name} | {_f(d['input_target_pearson'])} | {', '.join(wins) or 'nothing'} | "
                     f"{d['training']['pix2pix'][0]['generator_steps']} | "
                     f"{seconds['pix2pix']:.0f} / {seconds.get('l1_only_unet', float('nan')):.0f} |")
    return lines + [""]


def _ms(stats: dict, digits: int = 3) -> str:
    return f"{stats['mean']:.{digits}f} ± {stats['sd']:.{digits}f}"


def quality_seg(r: dict) -> list[str]:
    lines = ["## Segmentation on real images (`quality_segmentation.py`)", "", header(r), ""]
    m, b = r["model"], r["otsu_baseline_same_postprocessing"]
    return lines + [
        f"DSB 2018 fluorescence images: {r['images']['train']} train, {r['images']['val']} validation, "
        f"{r['images']['test']} test; {r['epochs']} epochs of {r['samples_per_epoch']} crops "
        f"({r['runs'][0]['steps']} steps) per seed, seeds {r['seeds']}; mean ± sd over the seeds. The baseline is split "
        "into cells by the same post-processing as the model's mask.", "",
        *table("method", "IoU", "object F1 (IoU >= 0.5)"),
        f"| U-Net ResNet-18 (random init), BCE + Jaccard | {_ms(m['iou'])} | {_ms(m['object_f1'])} |",
        f"| Otsu threshold, same post-processing | {_ms(b['iou'])} | {_ms(b['object_f1'])} |", ""]


def _split(run: dict) -> str:
    """The split setting a run was decoded with (a level, or a fraction of each image's diameter), and with
    segmentation.unseeded=auto the rule validation chose for foreground no seed reaches."""
    return ((f"{run['split']['value']:g}" if run["split"].get("fraction") is None else f"{run['split']['fraction']:g}d")
            + (f" {run['unseeded']}" if run.get("unseeded_f1") else ""))


def instance_heads(r: dict) -> list[str]:
    title = ("## Instance heads on real cells (`instance_heads.py`)" if r["benchmark"] == "instance_heads" else
             f"## Instance heads, {r['epochs']} epochs (`instance_heads.py --record {r['benchmark']}`)")
    modes = " / ".join(dict.fromkeys(mode for d in r["sets"].values() for mode in d["table"]))
    # a split setting given on the command line is used as it is, not tuned
    given = any(o.startswith(("segmentation.seed_threshold=", "segmentation.min_distance=", "segmentation.tune=false"))
                for o in r.get("eval_overrides", []))
    lines = [title, "", header(r), "",
             f"`model.instances` {modes}, each trained {r['epochs']} epochs of "
             f"{r['samples_per_epoch']} crops per seed (seeds {r['seeds']}), scored by `evaluate.py` on the held-out "
             "images: object F1 at IoU 0.5 and mean AP over IoU 0.5:0.95 (DSB 2018 definition) pooled over the test "
             "images; mean ± sd over the seeds. Split: the setting that parts touching objects (`seed_threshold` with "
             "a head, `min_distance` in pixels without), "
             + ("as given." if given else "tuned on the validation split, per seed." if r.get("tune_on") != "train+val"
                else "tuned on the validation split and up to 16 training fields, per seed (`d`: that fraction of "
                     "each image's own object diameter).")
             + (f" Trained with {', '.join(f'`{o}`' for o in r['train_overrides'])}." if r.get("train_overrides") else "")
             + (f" Evaluated with {', '.join(f'`{o}`' for o in r['eval_overrides'])}." if r.get("eval_overrides") else "")
             + (f" Maps averaged over {r['tta']} flips/rotations (`segmentation.tta={r['tta']}`)." if r.get("tta") else "")
             + (f" {r['note'][0].upper()}{r['note'][1:]}." if r.get("note") else ""), "",
             *table("data", "instances", "pixel IoU", "object F1 (IoU 0.5)", "mean AP 0.5:0.95",
                    "split" if given else "split (tuned)")]
    for name, d in r["sets"].items():
        for mode, t in d["table"].items():
            best = "**" if mode == d["best_by_mean_ap"] else ""
            splits = ", ".join(_split(run) for run in d["runs"][mode] if run.get("split"))
            lines.append(f"| {name} | {mode} | {_ms(t['pixel_iou'])} | {_ms(t['object_f1_iou50'])} | "
                         f"{best}{_ms(t['mean_ap_50_95'])}{best} | {splits or '-'} |")
            if (e := d.get("ensemble", {}).get(mode)):  # --ensemble: the seeds' maps averaged, scored once
                lines.append(f"| {name} | {mode}, ensemble of the {len(r['seeds'])} seeds | {e['pixel_iou']:.3f} | "
                             f"{e['object_f1_iou50']:.3f} | {e['mean_ap_50_95']:.3f} | {_split(e)} |")
    otsu = [f"{name} pixel IoU {o['pixel_iou']:.3f}, object F1 {o['object_f1_mean_over_images']:.3f} (mean over images)"
            for name, d in r["sets"].items() if (o := d["runs"].get("none", [{}])[0].get("baseline_otsu"))]
    if otsu:
        lines += ["", "Otsu's threshold of the input, split like the `none` model's mask: " + "; ".join(otsu) + "."]
    # why cells are unmatched at IoU 0.5 (evaluation's object_errors), seed by seed; older records lack it
    errors = [f"{name} {mode}: " + ", ".join(f"{key.replace('_', ' ')} {' / '.join(str(e[key]) for e in kept)}"
                                            for key in kept[0])
              for name, d in r["sets"].items() for mode, runs in d["runs"].items()
              if (kept := [run["object_errors"] for run in runs if run.get("object_errors")])]
    errors += [f"{name} {mode} ensemble: " + ", ".join(f"{key.replace('_', ' ')} {n}" for key, n in e["object_errors"].items())
               for name, d in r["sets"].items() for mode, e in d.get("ensemble", {}).items() if e.get("object_errors")]
    if errors:
        lines += ["", "Why test cells are unmatched at IoU 0.5 (seed by seed): " + "; ".join(errors) + "."]
    return lines + [""]


def mutation(r: dict) -> list[str]:
    lines = ["## Mutation testing of the core modules (`mutation.py`, `make mutate`)", "", header(r), "",
             f"mutmut changes one operator, constant or argument at a time; a mutant is killed when a fast test fails. "
             f"Kill rate = (killed + timeout) / (killed + timeout + survived); \"no tests\" are mutants in code no "
             f"fast test reaches (counted separately). Target >= {r['target_kill_rate']:.0%} per module.", "",
             *table("module", "mutants", "killed", "survived", "timeout", "no tests", "kill rate", "target")]
    for module, m in r["modules"].items():
        total = sum(m.get(k, 0) for k in ("killed", "survived", "timeout", "no tests", "suspicious", "skipped"))
        lines.append(f"| `{module}` | {total} | {m.get('killed', 0)} | {m.get('survived', 0)} | {m.get('timeout', 0)} | "
                     f"{m.get('no tests', 0)} | {_f(m['kill_rate'] * 100 if m['kill_rate'] is not None else None, 1)}% | "
                     f"{ok(m['meets_target'])} |")
    return lines + [""]


def rbc(r: dict) -> list[str]:
    lines = ["## Synthetic red blood cells: the demo recipe (`rbc_quality.py`)", "", header(r), "",
             f"Test frames: pixel IoU {r['iou']:.3f} (target 0.9: {ok(r['iou_ok'])}), object F1 {r['object_f1']:.3f}.", "",
             *table("condition", "tau true s", "tau recovered s", "error (target <= 10%)", "cells fitted",
                    "CTC TRA (target >= 0.95)")]
    for name, c in r["conditions"].items():
        lines.append(f"| {name} | {c['tau_true']:.1f} | {c['tau_recovered']:.1f} | {c['tau_error']:.1%} | "
                     f"{c['n_cells']} | {_f(c.get('tra'))} |")
    return lines + [""]


def exported(r: dict) -> list[str]:
    lines = ["## Exported models (`export_models.py`)", "", header(r), "",
             "The `make demo` models exported with `export.py`: the bioimage.io package checked by `bioimageio.core`'s "
             "`test_model` (offline), ONNX and TorchScript compared with PyTorch on a real and a random input (largest "
             "absolute difference), and CPU time of one forward pass of each format (median).", "",
             *table("model", "test_model", "ONNX max diff", "TorchScript max diff", "input", "PyTorch", "ONNX Runtime",
                    "TorchScript")]
    for job, m in r["models"].items():
        t, d = m["timing"]["seconds"], m["max_abs_difference"]
        lines.append(f"| {job} | {m['test_model']['status']} | {max(d['onnx'].values()):.1e} | "
                     f"{max(d['torchscript'].values()):.1e} | {'x'.join(map(str, m['timing']['input']))} | "
                     f"{t['pytorch'] * 1000:.0f} ms | {t['onnxruntime'] * 1000:.0f} ms | {t['torchscript'] * 1000:.0f} ms |")
    return lines + [""]


UNCERTAINTY_LABELS = {"uncertainty": "uncertainty (object disagreement, evaluate.py's map)",
                      "relative_spread": "relative spread (uncertainty.map=relative)",
                      "spread": "plain standard deviation (the first map)"}


def _over_seeds(stat: dict) -> str:
    """mean ± sd, and how many seeds had an AUC where not all did."""
    have = sum(v is not None for v in stat["runs"])
    return f"{_f(stat['mean'])} ± {_f(stat['sd'])}" + (f" ({have} of {len(stat['runs'])} seeds)"
                                                        if have < len(stat["runs"]) else "")


def uncertainty(r: dict) -> list[str]:
    maps = ("uncertainty", "relative_spread", "spread", "abs_error", "1-ssim")
    lines = ["## Uncertainty on real fields (`uncertainty_isl.py`)", "", header(r), "",
             f"The default recipe for a fixed number of generator steps, once per seed ({', '.join(map(str, r['seeds']))}), "
             "evaluated on each field's held-out region with test-time augmentation (TTA, 8 flips and rotations) and, "
             "on the same checkpoint, with Monte-Carlo dropout (MC). Pixel ROC AUC for telling invented from found "
             f"predicted nuclei, mean ± sd over the seeds; target >= {r['target_invented_auc']} on {r['target_field']}.",
             "", *table("field", "method", *[UNCERTAINTY_LABELS.get(m, m) for m in maps], "per-nucleus risk")]
    for name, f in r["fields"].items():
        stats = f["over_seeds"]
        for method in ("tta", "mc_dropout"):
            cells = [_over_seeds(stats[k]) if (k := f"{method}/{m}") in stats else "" for m in (*maps, "risk")]
            lines.append(f"| {name} ({f['task']}) | {'TTA' if method == 'tta' else 'MC'} | " + " | ".join(cells) + " |")
    lines += ["", "Each run (TTA / MC invented-nuclei AUC of the uncertainty map; nuclei of the held-out region):", "",
              *table("field", "seed", "steps", "found / invented / missed", "uncertainty TTA / MC",
                     "relative spread TTA / MC", "verdict against the baselines")]
    for name, f in r["fields"].items():
        for seed, run in f["runs"].items():
            n, mc = run["nuclei"], run["mc_dropout"]["map_separation"]
            pair = lambda m: (f"{_f(run['map_separation'].get(m, {}).get('invented_auc'))} / "  # noqa: E731
                              f"{_f(mc.get(m, {}).get('invented_auc'))}")
            lines.append(f"| {name} | {seed} | {run['generator_steps']} | {n['tp']} / {n['hallucinated']} / {n['missed']} "
                         f"| {pair('uncertainty')} | {pair('relative_spread')} | {run['verdict']['line']} |")
    return lines + [""]


def main() -> None:
    path = ROOT / "BENCHMARKS.md"
    notes = path.read_text().split(MARKER, 1)[1] if path.is_file() and MARKER in path.read_text() else "\n"
    lines = ["# Benchmarks", "", "Figures from `make bench` (about 4.5 hours on 2 CPU cores); every number below is read "
             "from `benchmarks/results/<name>.json`, named in each section's heading by the script that writes it, "
             "with the commit it ran on. Regenerate with `make bench`.", ""]
    for name, render in (("speed_training", training), ("speed_inference", inference), ("speed_video", video),
                         ("real_data", real_data), ("uncertainty_isl", uncertainty), ("quality_segmentation", quality_seg),
                         ("instance_heads", instance_heads), ("instance_heads_long", instance_heads),
                         *((p.stem, instance_heads) for p in sorted(RESULTS.glob("instance_heads_*.json"))
                           if p.stem != "instance_heads_long"),
                         ("rbc_quality", rbc), ("export", exported),
                         ("mutation", mutation)):
        record = load(name)
        lines += render(record) if record else [f"## {name}", "", "_not run yet_", ""]
    path.write_text("\n".join(lines) + "\n" + MARKER + notes)
    print(f"write_markdown: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
