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


def ok(flag: bool | None) -> str:
    return "meets" if flag else "**misses**"


def header(record: dict) -> str:
    m = record["machine"]
    return (f"_{record['date']} · {m['machine']}, {m['cpus']} CPUs, torch {m['torch']} ({m['threads']} threads), "
            f"CUDA {'yes' if m['cuda'] else 'no'} · `{record['command']}`_")


def training(r: dict) -> list[str]:
    lines = ["## Training speed (`speed_training.py`)", "", header(r), "",
             f"Batch {r['batch']} x {r['patch']}^2 px, {r['steps_per_block']} steps per block, {r['repeats']} interleaved "
             "repeats; medians of the per-step wall time.", "",
             "| model | stainless s/step | plain PyTorch s/step | ratio (target <= 1.05) | bf16-mixed | channels_last | compile |",
             "|---|---|---|---|---|---|---|"]
    for job, j in r["jobs"].items():
        s = j["median_step_s"]
        speed = j["switch_speedup_vs_default"]
        lines.append(f"| {job} | {s['stainless']:.3f} | {s['plain']:.3f} | {j['overhead_ratio']:.3f} ({ok(j['overhead_ok'])}) | "
                     f"x{speed.get('bf16-mixed', float('nan')):.2f} | x{speed.get('channels_last', float('nan')):.2f} | "
                     + (f"x{speed['compile']:.2f}" if "compile" in speed else f"failed: {j['compile_error']}") + " |")
    lines += ["", "Switch columns: speed-up of the step over the default (above 1 is faster).", "",
              "| model | model consumes samples/s | loader delivers, 0 / 1 / 2 workers | loader / model (target >= 2) |",
              "|---|---|---|---|"]
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
             "| image | resident before, MB | peak, MB | growth, MB | of which image-sized arrays, MB | working memory, MB |",
             "|---|---|---|---|---|---|"]
    for m in r["memory"]:
        lines.append(f"| {m['size']}^2 | {m['rss_before_mb']:.0f} | {m['rss_peak_mb']:.0f} | {m['growth_mb']:.0f} | "
                     f"{m['image_sized_arrays_mb']:.0f} | {m['working_mb']:.0f} |")
    return lines + ["", "Each size runs in a fresh process; the image-sized arrays are the output and the accumulator "
                    "of blended tiles, which any whole-image prediction needs.", ""]


def video(r: dict) -> list[str]:
    lines = ["## Video analysis (`speed_video.py`)", "", header(r), "",
             "| frames | cells | segmentation s | whole analysis s | overhead | without overlay video | analysis fps |",
             "|---|---|---|---|---|---|---|"]
    for run in r["runs"].values():
        lines.append(f"| {run['frames']} | {run['cells']} | {run['segmentation_s']:.1f} | {run['analysis_s']:.1f} | "
                     f"{run['overhead']:+.0%} | {run['overhead_without_overlay_video']:+.0%} | {run['analysis_fps']:.1f} |")
    scaling = ", ".join(f"{k.split('_')[0]} frames x{v:.2f}" for k, v in r["time_per_frame_relative_to_shortest"].items())
    return lines + ["", f"Overhead target <= 15%: {ok(r['overhead_ok'])}. Time per frame relative to the shortest video "
                    f"(1.00 = linear): {scaling}.", ""]


def quality_vl(r: dict) -> list[str]:
    lines = ["## Virtual labeling on real images (`quality_virtual_labeling.py`)", "", header(r), "",
             f"CPU budget {r['budget_minutes_per_model']} min per model; right quarter of each field held out.", "",
             "| data | method | SSIM | PSNR dB | Pearson r | nuclei F1 | hallucinated | missed |", "|---|---|---|---|---|---|---|---|"]
    for dataset, d in r["datasets"].items():
        for method, s in d["table"].items():
            lines.append(f"| {dataset} | {method} | {s['ssim']:.3f} | {s['psnr']:.2f} | {s['pearson']:.3f} | "
                         f"{s.get('nuclei_f1', float('nan')):.3f} | {s.get('hallucinated', '')} | {s.get('missed', '')} |")
        steps = {k: v["steps"] for k, v in d["runs"].items()}
        lines.append(f"| {dataset} | (optimiser steps in the budget: {steps}) | | | | | | |")
    return lines + [""]


def quality_seg(r: dict) -> list[str]:
    m, b = r["model"], r["otsu_watershed_baseline"]
    return ["## Segmentation on real images (`quality_segmentation.py`)", "", header(r), "",
            f"DSB 2018 fluorescence images: {r['images']['train']} train, {r['images']['val']} validation, "
            f"{r['images']['test']} test; CPU budget {r['budget_minutes']} min ({r['epochs']} epochs, {r['steps']} steps).", "",
            "| method | IoU | object F1 (IoU >= 0.5) |", "|---|---|---|",
            f"| U-Net ResNet-18 (random init), BCE + Jaccard | {m['iou']:.3f} | {m['object_f1']:.3f} |",
            f"| Otsu threshold + watershed | {b['iou']:.3f} | {b['object_f1']:.3f} |", ""]


def main() -> None:
    path = ROOT / "BENCHMARKS.md"
    notes = path.read_text().split(MARKER, 1)[1] if path.is_file() and MARKER in path.read_text() else "\n"
    lines = ["# Benchmarks", "", "Figures from the last `make bench` (under 30 minutes on 2 CPU cores); every number "
             "below is read from `benchmarks/results/*.json`. Regenerate with `make bench`.", ""]
    for name, render in (("speed_training", training), ("speed_inference", inference), ("speed_video", video),
                         ("quality_virtual_labeling", quality_vl), ("quality_segmentation", quality_seg)):
        record = load(name)
        lines += render(record) if record else [f"## {name}", "", "_not run yet_", ""]
    path.write_text("\n".join(lines) + "\n" + MARKER + notes)
    print(f"write_markdown: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
