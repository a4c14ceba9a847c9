"""The default virtual-labeling recipe on the real data of ../shared/data, pix2pix against an L1-only U-Net, each
trained for a fixed number of steps (not a time budget, so the figures do not depend on the machine's load) once per
seed, scored on held-out data; mean +- sd over the seeds.

One field per set, read where it lies (``data.fields``), split into regions (``split.mode=regions``: test = the last
quarter of the longer axis, validation = a strip of the rest, half a patch of gap between them):

- ``ht29``    CellProfiler HT29: cytoplasm stain (d2) -> DNA (d0), 512 x 512, uint8
- ``bbbc022`` BBBC022 U2OS: channels 1 + 2 -> Hoechst (channel 0), 395 x 695, uint16
- ``isl``     In-silico labeling condition B: phase contrast z0/z6/z12 stacked -> confocal DAPI, 1024 x 1024, uint16

``experiment=virtual_labeling`` (the default recipe) and the same U-Net with ``loss=l1`` each train ``--epochs``
epochs of 512 crops (64 generator steps an epoch; the learning rate's cosine decay ends with the last epoch);
``evaluate.py`` then scores the held-out region against the rescaled input and the constant mean image: SSIM, PSNR,
Pearson r, LPIPS (where its weights exist), nuclei F1 and hallucinated / missed nuclei (the truth: nuclei detected in
the target; there are no label images). The verdicts (pix2pix against each baseline, and against the L1-only U-Net)
are drawn on the means over the seeds, with the spread beside them.

Segmentation on real data (DSB 2018, Usiigaci) is measured by ``instance_heads.py`` (the ``none`` rows are the
default recipe) and ``quality_segmentation.py``, both with the same post-processing for model and baselines.

Run from the repository root: ``.venv/bin/python benchmarks/real_data.py [--epochs 5] [--seeds 0,1,2] [--only ht29,isl]``
Writes benchmarks/results/real_data.json (``write_markdown.py`` makes the BENCHMARKS.md table).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import ROOT, SHARED_DATA, mean_sd, run, write_result

from stainless.metrics.image import HIGHER_IS_BETTER

VL_METRICS = ("ssim", "psnr", "pearson", "lpips", "mse", "nuclei_f1")


def vl_fields(name: str) -> tuple[list[str], str]:
    """Hydra overrides that list the field of one virtual-labeling set, and a description."""
    if name == "ht29":
        folder = SHARED_DATA / "cp_examplehuman_ht29_3ch"
        source, target = next(folder.glob("*d2.tif")), next(folder.glob("*d0.tif"))
        return [f"data.fields=[{{name:ht29,source:'{source}',target:'{target}'}}]"], "cytoplasm (d2) -> DNA (d0)"
    if name == "bbbc022":
        path = SHARED_DATA / "bbbc022_u2os_3ch_crop" / "IXMtest_A02_s9.tif"
        return [f"data.fields=[{{name:bbbc022,source:'{path}',target:'{path}'}}]", "data.source_channels=[1,2]",
                "data.target_channels=[0]"], "channels 1+2 -> Hoechst (0)"
    folder = SHARED_DATA / "isl_condB_phase_dapi_map2"
    planes = ",".join(f"'{folder / f'phase_z{z:02d}.png'}'" for z in (0, 6, 12))
    return [f"data.fields=[{{name:isl,source:[{planes}],target:'{folder / 'dapi_confocal_maxproj.png'}'}}]"], \
        "phase contrast z0/z6/z12 -> confocal DAPI"


def segmentation_data(name: str) -> list[str]:
    if name == "dsb2018":
        folder = SHARED_DATA / "dsb2018_stage1_subset"
        return [f"data.source_dir={folder / 'images'}", f"data.target_dir={folder / 'labels'}",
                "data.source_channels=[0,1,2]", "data.split.val_fraction=0.15", "data.split.test_fraction=0.25"]
    folder = SHARED_DATA / "usiigaci_phase_wholecell_masks"
    return [f"data.source_dir={folder / 'images'}", f"data.target_dir={folder / 'labels'}", "data.split.mode=regions",
            "data.split.val_fraction=0.15", "data.split.test_fraction=0.25"]


def train_and_evaluate(overrides: list[str], root: Path, tag: str, epochs: int, quick: bool, seed: int = 0,
                       evaluate_with: tuple[str, ...] = ("uncertainty.method=none",)) -> tuple[dict, dict]:
    """Train ``epochs`` epochs with ``seed`` and score the held-out part with ``evaluate.py``."""
    run_dir, eval_dir = root / f"{tag}_{seed}_train", root / f"{tag}_{seed}_eval"
    limit = ["trainer.max_epochs=2", "data.samples_per_epoch=16"] if quick else [f"trainer.max_epochs={epochs}"]
    run([str(ROOT / "train.py"), *overrides, *limit, f"seed={seed}", "test=false", "callbacks.early_stopping=null",
         "callbacks.progress_bar.refresh_rate=0", "print_config=false", "logger=csv", f"hydra.run.dir={run_dir}"], cwd=root)
    summary = json.loads((run_dir / "summary.json").read_text())
    run([str(ROOT / "evaluate.py"), f"ckpt_path={summary['last_model_path']}", f"hydra.run.dir={eval_dir}",
         *evaluate_with, "report=markdown"], cwd=root)
    return summary, json.loads((eval_dir / "summary.json").read_text())


def vl_scores(evaluation: dict) -> dict[str, dict]:
    scores = {method: {m: stats[m]["mean"] for m in VL_METRICS if m in stats}
              for method, stats in evaluation["metrics"].items()}
    for method, pooled in evaluation.get("nuclei", {}).get("pooled_over_images", {}).items():
        scores[method].update(hallucinated=pooled["hallucinated"], missed=pooled["missed"], nuclei_tp=pooled["tp"])
    return scores


def training_record(summary: dict, gan: bool) -> dict:
    return {"epochs": summary["epochs"], "generator_steps": summary["global_step"] // (2 if gan else 1),
            "train_s": summary["duration_s"], "validation_share": summary["validation_share"],
            "data": summary["data"]}


def over_seeds(per_seed: list[dict]) -> dict[str, dict]:
    """{metric: {mean, sd, runs}} over the seeds' score dictionaries (metrics missing from a run are left out)."""
    metrics = [m for m in per_seed[0] if all(m in s and s[m] is not None for s in per_seed)]
    return {m: {**mean_sd(s[m] for s in per_seed), "runs": [s[m] for s in per_seed]} for m in metrics}


def better(a: dict, b: dict, metric: str) -> bool:
    """Whether ``a``'s mean over the seeds beats ``b``'s on ``metric`` (in the metric's own direction)."""
    higher = HIGHER_IS_BETTER[metric]
    return a[metric]["mean"] > b[metric]["mean"] if higher else a[metric]["mean"] < b[metric]["mean"]


def virtual_labeling(name: str, epochs: int, seeds: list[int], quick: bool, extra: list[str], l1: bool = True) -> dict:
    fields, description = vl_fields(name)
    common = ["experiment=virtual_labeling", "data=paired_folders", *fields, "data.split.mode=regions",
              "data.split.val_fraction=0.15", "data.split.test_fraction=0.25", "data.label_dir=null", *extra]
    runs: dict[str, list[dict]] = {"pix2pix": [], "baseline_input": [], "baseline_mean": [], "l1_only_unet": []}
    training: dict[str, list[dict]] = {"pix2pix": [], "l1_only_unet": []}
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for seed in seeds:
            gan_summary, gan_eval = train_and_evaluate(common, root, "pix2pix", epochs, quick, seed)
            scores = vl_scores(gan_eval)
            for method in ("pix2pix", "baseline_input", "baseline_mean"):
                runs[method].append(scores["model" if method == "pix2pix" else method])
            training["pix2pix"].append(training_record(gan_summary, True))
            verdicts.append(gan_eval.get("verdict", {}).get("line"))
            if l1:
                l1_summary, l1_eval = train_and_evaluate([*common, "loss=l1"], root, "l1", epochs, quick, seed)
                runs["l1_only_unet"].append(vl_scores(l1_eval)["model"])
                training["l1_only_unet"].append(training_record(l1_summary, False))
            print(f"{name} seed {seed}: pix2pix SSIM {scores['model']['ssim']:.3f}"
                  + (f", L1-only {runs['l1_only_unet'][-1]['ssim']:.3f}" if l1 else ""), flush=True)
    table = {method: over_seeds(r) for method, r in runs.items() if r}
    compared = [m for m in ("ssim", "psnr", "pearson", "nuclei_f1") if m in table["pix2pix"]]
    beats = {m: all(better(table["pix2pix"], table[b], m) for b in ("baseline_input", "baseline_mean")
                    if m in table[b]) for m in compared}
    record = {"task": description, "seeds": seeds, "input_target_pearson": table["baseline_input"]["pearson"]["mean"],
              "table": table, "beats_every_baseline": beats, "evaluate_verdicts": verdicts, "training": training}
    if l1:
        record["pix2pix_beats_l1_only"] = {m: better(table["pix2pix"], table["l1_only_unet"], m) for m in compared}
    return record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5, help="epochs of 512 crops (64 generator steps each) per model")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", default="ht29,bbbc022,isl")
    parser.add_argument("--quick", action="store_true", help="two tiny epochs per model (a smoke run)")
    parser.add_argument("--skip-l1", action="store_true", help="no L1-only U-Net (trying a recipe)")
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for the virtual-labeling runs (trying a recipe)")
    args = parser.parse_args()
    chosen, seeds = args.only.split(","), [int(s) for s in args.seeds.split(",")]
    results: dict = {"overrides": args.set, "epochs": args.epochs, "quick": args.quick, "virtual_labeling": {}}
    lines = []
    for name in ("ht29", "bbbc022", "isl"):
        if name in chosen:
            result = results["virtual_labeling"][name] = virtual_labeling(name, args.epochs, seeds, args.quick, args.set,
                                                                            not args.skip_l1)
            p = result["table"]["pix2pix"]
            lines.append(f"{name}: SSIM {p['ssim']['mean']:.3f} ± {p['ssim']['sd']:.3f}, r {p['pearson']['mean']:.3f} "
                         f"(beats all baselines: {all(result['beats_every_baseline'].values())}; beats L1-only on "
                         f"{sum(result.get('pix2pix_beats_l1_only', {}).values())} of {len(result['beats_every_baseline'])})")
    everything = set(chosen) >= {"ht29", "bbbc022", "isl"} and len(seeds) >= 3 and not args.quick
    name = "real_data_trial" if args.set else "real_data" if everything else "real_data_" + "_".join(chosen)
    write_result(name, results, "; ".join(lines))  # a partial run never overwrites the full record


if __name__ == "__main__":
    main()
