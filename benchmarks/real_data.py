"""The default recipes on the real data of ../shared/data, each under a fixed CPU budget, scored on held-out data.

Virtual labeling, one field each, read where it lies (``data.fields``), split into regions (``split.mode=regions``:
test = the last quarter of the longer axis, validation = a strip of the rest, half a patch of gap between them):

- ``ht29``    CellProfiler HT29: cytoplasm stain (d2) -> DNA (d0), 512 x 512, uint8
- ``bbbc022`` BBBC022 U2OS: channels 1 + 2 -> Hoechst (channel 0), 395 x 695, uint16
- ``isl``     In-silico labeling condition B: phase contrast z0/z6/z12 stacked -> confocal DAPI, 1024 x 1024, uint16

``experiment=virtual_labeling`` (the default recipe) and an L1-only U-Net (the same recipe with ``loss=l1``) each
train for ``--minutes``; ``evaluate.py`` then scores the held-out region against the rescaled input and the constant
mean image: SSIM, PSNR, Pearson r, LPIPS (where its weights exist), nuclei F1 and hallucinated / missed nuclei
(the truth: nuclei detected in the target; there are no label images). Recorded: generator steps, epochs and the
share of wall time spent validating.

Segmentation (``experiment=rbc_segmentation`` recipe on other data, ``data=masks``, instance labels):

- ``dsb2018``   23 DSB-2018 images (fluorescence, brightfield, H&E), split by image (val 15%, test 25%)
- ``usiigaci``  3 phase-contrast fields with whole-cell labels, split into regions

reporting pixel IoU and object F1 at IoU 0.5 on the test part.

Run from the repository root: ``.venv/bin/python benchmarks/real_data.py [--minutes 8] [--only ht29,isl] [--quick]``
Writes benchmarks/results/real_data.json (``write_markdown.py`` makes the BENCHMARKS.md table).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import ROOT, SHARED_DATA, run, write_result

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


def budget(minutes: float) -> str:
    seconds = int(minutes * 60)
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train_and_evaluate(overrides: list[str], root: Path, tag: str, minutes: float, quick: bool,
                       evaluate_with: tuple[str, ...] = ("uncertainty.method=none",)) -> tuple[dict, dict]:
    run_dir, eval_dir = root / f"{tag}_train", root / f"{tag}_eval"
    limit = ["trainer.max_epochs=2", "data.samples_per_epoch=16"] if quick else ["trainer.max_epochs=100000"]
    started = time.time()
    run([str(ROOT / "train.py"), *overrides, *limit, f"++trainer.max_time={budget(minutes)}", "test=false",
         "callbacks.early_stopping=null", "callbacks.progress_bar.refresh_rate=0", "print_config=false", "logger=csv",
         f"hydra.run.dir={run_dir}"], cwd=root)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["wall_s"] = round(time.time() - started, 1)
    run([str(ROOT / "evaluate.py"), f"ckpt_path={summary['best_model_path'] or summary['last_model_path']}",
         f"hydra.run.dir={eval_dir}", *evaluate_with, "report=markdown"], cwd=root)
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
            "data": summary["data"], "val_field": {k: v for k, v in summary["metrics"].items() if k.startswith("val_field/")
                                                   and not k.endswith("_best")}}


def virtual_labeling(name: str, minutes: float, quick: bool, extra: list[str], l1: bool = True) -> dict:
    fields, description = vl_fields(name)
    common = ["experiment=virtual_labeling", "data=paired_folders", *fields, "data.split.mode=regions",
              "data.split.val_fraction=0.15", "data.split.test_fraction=0.25", "data.label_dir=null", *extra]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        gan_summary, gan_eval = train_and_evaluate(common, root, "pix2pix", minutes, quick)
        if l1:
            l1_summary, l1_eval = train_and_evaluate([*common, "loss=l1"], root, "l1", minutes, quick)
    gan = vl_scores(gan_eval)
    table = {"pix2pix": gan["model"], "baseline_input": gan["baseline_input"], "baseline_mean": gan["baseline_mean"]}
    training = {"pix2pix": training_record(gan_summary, True)}
    if l1:
        table["l1_only_unet"] = vl_scores(l1_eval)["model"]
        training["l1_only_unet"] = training_record(l1_summary, False)
    verdict = {metric: all((table["pix2pix"][metric] > table[b][metric]) for b in table if b != "pix2pix")
               for metric in ("ssim", "psnr", "pearson")}
    return {"task": description, "input_target_pearson": gan["baseline_input"]["pearson"], "table": table,
            "verdict": gan_eval.get("verdict", {}).get("line"),
            "beats_every_baseline": verdict, "training": training,
            "lpips": gan_eval.get("lpips")}


def segmentation(name: str, minutes: float, quick: bool) -> dict:
    overrides = ["experiment=rbc_segmentation", "data=masks", "data.mask_mode=instances", *segmentation_data(name)]
    with tempfile.TemporaryDirectory() as tmp:
        summary, evaluation = train_and_evaluate(overrides, Path(tmp), name, minutes, quick)
    model = evaluation["metrics"]["model"]
    baselines = {method: {"pixel_iou": stats["iou"]["mean"], "object_f1_iou50_mean_over_images": stats["object_f1"]["mean"]}
                 for method, stats in evaluation["metrics"].items() if method != "model"}
    return {"pixel_iou": model["iou"]["mean"], "object_f1_iou50": evaluation["objects_by_iou"]["0.5"]["f1"],
            "object_f1_iou50_mean_over_images": model["object_f1"]["mean"],
            "n_true_cells": evaluation["objects_by_iou"]["0.5"]["tp"] + evaluation["objects_by_iou"]["0.5"]["fn"],
            "baselines": baselines, "verdict": evaluation.get("verdict", {}).get("line"),
            "n_test_images": evaluation.get("n_images"), "training": training_record(summary, False)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=8.0, help="CPU training budget per model")
    parser.add_argument("--segmentation-minutes", type=float, default=5.0)
    parser.add_argument("--only", default="ht29,bbbc022,isl,dsb2018,usiigaci")
    parser.add_argument("--quick", action="store_true", help="two tiny epochs per model (a smoke run)")
    parser.add_argument("--skip-l1", action="store_true", help="no L1-only U-Net (trying a recipe)")
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for the virtual-labeling runs (trying a recipe)")
    args = parser.parse_args()
    chosen = args.only.split(",")
    results: dict = {"overrides": args.set, "budget_minutes": args.minutes, "segmentation_budget_minutes": args.segmentation_minutes,
                     "quick": args.quick, "virtual_labeling": {}, "segmentation": {}}
    lines = []
    for name in ("ht29", "bbbc022", "isl"):
        if name in chosen:
            result = results["virtual_labeling"][name] = virtual_labeling(name, args.minutes, args.quick, args.set,
                                                                            not args.skip_l1)
            p = result["table"]["pix2pix"]
            lines.append(f"{name}: SSIM {p['ssim']:.3f} r {p['pearson']:.3f} F1 {p.get('nuclei_f1', float('nan')):.2f} "
                         f"(beats all baselines: {all(result['beats_every_baseline'].values())})")
    for name in ("dsb2018", "usiigaci"):
        if name in chosen:
            result = results["segmentation"][name] = segmentation(name, args.segmentation_minutes, args.quick)
            lines.append(f"{name}: IoU {result['pixel_iou']:.3f} object F1 {result['object_f1_iou50']:.3f}")
    everything = set(chosen) >= {"ht29", "bbbc022", "isl", "dsb2018", "usiigaci"}
    name = "real_data_trial" if args.set else "real_data" if everything else "real_data_" + "_".join(chosen)
    write_result(name, results, "; ".join(lines))  # a partial run never overwrites the full record


if __name__ == "__main__":
    main()
