"""``make demo``: synthetic data -> train pix2pix for a few minutes -> evaluate -> compare with baselines.

Runs the real entry points (``train.py``, ``evaluate.py``) as a user would, each in its own run directory
under ``outputs/demo/<time>/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPARED = (("ssim", "SSIM", True), ("psnr", "PSNR (dB)", True), ("mse", "MSE", False))


def _run(args: list[str]) -> None:
    print("$ python " + " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


def comparison_table(summary: dict) -> tuple[str, bool]:
    """A text table of model vs. baselines and whether the model beats both on every compared metric."""
    methods = summary["metrics"]
    lines = [f"{'method':<16}" + "".join(f"{label:>14}" for _, label, _ in COMPARED)]
    for method, stats in methods.items():
        lines.append(f"{method:<16}" + "".join(f"{stats[key]['mean']:>14.4f}" for key, _, _ in COMPARED))
    wins = all(
        (methods["model"][key]["mean"] > methods[b][key]["mean"]) == higher
        for key, _, higher in COMPARED
        for b in methods
        if b != "model"
    )
    return "\n".join(lines), wins


def main() -> int:
    started = time.time()
    base = Path("outputs") / "demo" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    train_dir, eval_dir = base / "train", base / "evaluate"
    _run(["train.py", "experiment=virtual_labeling_demo", f"hydra.run.dir={train_dir}", "print_config=false"])
    train_summary = json.loads((ROOT / train_dir / "summary.json").read_text())
    ckpt = train_summary["best_model_path"] or train_summary["last_model_path"]
    _run(["evaluate.py", f"ckpt_path={ckpt}", f"hydra.run.dir={eval_dir}"])
    summary = json.loads((ROOT / eval_dir / "summary.json").read_text())
    table, wins = comparison_table(summary)
    print("\nVirtual labeling (membrane -> nuclei), test images of the synthetic tissue, mean over images:")
    print(table)
    print(f"\nModel beats both baselines on SSIM, PSNR and MSE: {'yes' if wins else 'NO'}")
    print(f"Training run:  {ROOT / train_dir}  (checkpoints/, images/, csv/, summary.json)")
    print(f"Evaluation:    {ROOT / eval_dir}  (report.html, metrics.csv, predictions/, maps/)")
    print(f"Demo took {time.time() - started:.0f} s")
    return 0 if wins else 1


if __name__ == "__main__":
    sys.exit(main())
