"""``make demo``: both jobs end to end on generated synthetic data.

Virtual labeling: train pix2pix for a few minutes, evaluate, compare with baselines. Segmentation: train the
RBC segmenter from LabelMe annotations, score it, analyse the three condition videos and compare the
recovered shrinking time constants with the true ones. Both models are exported as bioimage.io packages.

Runs the real entry points (``train.py``, ``evaluate.py``, ``export.py``) as a user would, each in its own run directory
under ``outputs/demo/<time>/``.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPARED = (("ssim", "SSIM", True), ("psnr", "PSNR (dB)", True), ("mse", "MSE", False), ("nuclei_f1", "nuclei F1", True))


def _run(args: list[str]) -> None:
    print("$ python " + " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


def comparison_table(summary: dict) -> tuple[str, bool]:
    """A text table of model vs. baselines and whether the model beats both on every compared metric."""
    methods = summary["metrics"]
    counts = summary.get("nuclei", {}).get("pooled_over_images", {})
    lines = [f"{'method':<16}" + "".join(f"{label:>12}" for _, label, _ in COMPARED) + f"{'hallucinated':>14}{'missed':>8}"]
    for method, stats in methods.items():
        pooled = counts.get(method, {})
        lines.append(f"{method:<16}" + "".join(f"{stats[key]['mean']:>12.4f}" for key, _, _ in COMPARED)
                     + f"{pooled.get('hallucinated', ''):>14}{pooled.get('missed', ''):>8}")
    wins = all(
        (methods["model"][key]["mean"] > methods[b][key]["mean"]) == higher
        for key, _, higher in COMPARED
        for b in methods
        if b != "model"
    )
    return "\n".join(lines), wins


def _train(experiment: str, run_dir: Path) -> str:
    _run(["train.py", f"experiment={experiment}", f"hydra.run.dir={run_dir}", "print_config=false"])
    summary = json.loads((ROOT / run_dir / "summary.json").read_text())
    return summary["best_model_path"] or summary["last_model_path"]


def _export(ckpt: str, base: Path) -> dict:
    """The bioimage.io package of a demo model (README figures from its evaluation), checked by test_model."""
    _run(["export.py", f"ckpt_path={ckpt}", f"hydra.run.dir={base / 'export'}", f"evaluation={base / 'evaluate'}"])
    return json.loads((ROOT / base / "export" / "summary.json").read_text())


def virtual_labeling(base: Path) -> tuple[str, bool, dict]:
    """Train, evaluate and export pix2pix on the synthetic tissue; the comparison table, whether the model wins,
    and the export summary."""
    ckpt = _train("virtual_labeling_demo", base / "train")
    _run(["evaluate.py", f"ckpt_path={ckpt}", f"hydra.run.dir={base / 'evaluate'}"])
    table, wins = comparison_table(json.loads((ROOT / base / "evaluate" / "summary.json").read_text()))
    return table, wins, _export(ckpt, base)


def rbc_segmentation(base: Path) -> dict:
    """Train the RBC segmenter from LabelMe, score it on test frames, analyse the three videos.

    Returns:
        ``iou`` (mean over test frames), ``object_f1`` (at IoU 0.5) and per condition the true and recovered
        time constants, with the run directories.
    """
    ckpt = _train("rbc_segmentation_demo", base / "train")
    _run(["evaluate.py", f"ckpt_path={ckpt}", f"hydra.run.dir={base / 'evaluate'}"])
    frames = json.loads((ROOT / base / "evaluate" / "summary.json").read_text())
    videos_dir = ROOT / "data" / "synthetic_rbc" / "videos"
    truth = {row["condition"]: row for row in csv.DictReader(open(videos_dir / "conditions.csv"))}
    videos = ",".join(f"{name}:{videos_dir / (name + '.tif')}" for name in truth)
    truths = ",".join(f"{name}:{videos_dir / (name + '_GT')}" for name in truth if (videos_dir / f"{name}_GT").is_dir())
    _run(["evaluate.py", f"ckpt_path={ckpt}", f"hydra.run.dir={base / 'videos'}", f"videos={{{videos}}}",
          *([f"tracking_gt={{{truths}}}"] if truths else [])])
    recovered = {row["condition"]: row for row in csv.DictReader(open(ROOT / base / "videos" / "conditions.csv"))}
    conditions = {
        name: {"tau_true": float(truth[name]["tau_s"]), "tau_recovered": float(recovered[name]["tau_median"]),
               "final_fraction_true": float(truth[name]["final_fraction"]),
               "final_fraction_recovered": float(recovered[name]["final_fraction_median"]),
               "n_cells": int(recovered[name]["n_cells"]),
               "tra": float(recovered[name]["TRA"]) if recovered[name].get("TRA") else None}
        for name in truth
    }
    for c in conditions.values():
        c["tau_error"] = abs(c["tau_recovered"] - c["tau_true"]) / c["tau_true"]
    return {"iou": frames["metrics"]["model"]["iou"]["mean"], "object_f1": frames["objects_by_iou"]["0.5"]["f1"],
            "conditions": conditions, "export": _export(ckpt, base),
            "runs": {k: str(ROOT / base / k) for k in ("train", "evaluate", "videos", "export")}}


def main() -> int:
    started = time.time()
    base = Path("outputs") / "demo" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    table, wins, exported = virtual_labeling(base / "virtual_labeling")
    rbc = rbc_segmentation(base / "rbc")
    print("\n== Virtual labeling (membrane -> nuclei), synthetic test images, mean over images ==")
    print(table)
    print(f"Model beats both baselines on SSIM, PSNR, MSE and nuclei F1: {'yes' if wins else 'NO'}")
    print(f"  training run: {ROOT / base / 'virtual_labeling' / 'train'}  (checkpoints/, images/, csv/, summary.json)")
    print(f"  evaluation:   {ROOT / base / 'virtual_labeling' / 'evaluate'}  (report.html, metrics.csv, predictions/, maps/)")
    print(f"  bioimage.io:  {exported['output']}  (test_model: {exported['test_model']['status']})")
    print("\n== RBC segmentation (trained from LabelMe polygons) and shrinking over time ==")
    print(f"Test frames: IoU {rbc['iou']:.3f}, object F1 at IoU 0.5 {rbc['object_f1']:.3f}")
    print(f"{'condition':<10}{'tau true (s)':>14}{'tau found (s)':>15}{'error':>8}{'cells':>7}{'CTC TRA':>9}")
    for name, c in rbc["conditions"].items():
        tra = f"{c['tra']:>9.3f}" if c["tra"] is not None else f"{'n/a':>9}"
        print(f"{name:<10}{c['tau_true']:>14.1f}{c['tau_recovered']:>15.1f}{c['tau_error']:>8.1%}{c['n_cells']:>7d}{tra}")
    for kind, path in rbc["runs"].items():
        print(f"  {kind + ':':<10} {path}")
    print("  (videos: cells.csv, fits.csv, conditions.csv, area_vs_time.png, tau_by_condition.png, *_overlay.mp4,\n"
          "   tracks/<condition>/: tracks.csv, tracks_napari.csv, labels.tif, ctc/ scored against the generator's truth)")
    print(f"  bioimage.io package: {rbc['export']['output']}  (test_model: {rbc['export']['test_model']['status']})")
    print(f"\nDemo took {time.time() - started:.0f} s")
    return 0 if wins else 1


if __name__ == "__main__":
    sys.exit(main())
