"""Virtual labeling quality on real images: HT29 (cytoplasm -> DNA) and BBBC022 (ch1 + ch2 -> Hoechst).

6. Each dataset is one field of view. Its right quarter is held out for testing; of the rest, the bottom quarter
   validates (selects the checkpoint) and the remainder trains. The default recipe (pix2pix, demo-sized networks)
   and the same generator trained with L1 only (no GAN) each get the same CPU time budget; evaluate.py scores the
   held-out part: SSIM, PSNR, Pearson r and nuclei F1 (nuclei detected in the target: there are no labels),
   against its two trivial baselines (the rescaled input; a constant image at the training mean).

The data is read where it lies (../shared/data); the crops are written to a temporary folder.
Run from the repository root: .venv/bin/python benchmarks/quality_virtual_labeling.py [--minutes 2.5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, SHARED_DATA, write_result

import numpy as np
import tifffile

METRICS = ("ssim", "psnr", "pearson", "nuclei_f1")


def load(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """(source C,H,W, target 1,H,W) of one field, raw values."""
    if dataset == "ht29":
        folder = SHARED_DATA / "cp_examplehuman_ht29_3ch"
        source = tifffile.imread(next(folder.glob("*d2.tif")))[None]
        target = tifffile.imread(next(folder.glob("*d0.tif")))[None]
    else:
        stack = tifffile.imread(SHARED_DATA / "bbbc022_u2os_3ch_crop" / "IXMtest_A02_s9.tif")
        source, target = stack[1:3], stack[:1]
    return source, target


def write_splits(dataset: str, root: Path) -> None:
    """train / val / test crops as source/target TIFF pairs: test = right quarter, val = bottom quarter of the rest."""
    source, target = load(dataset)
    h, w = source.shape[-2:]
    test_col, val_row = int(w * 0.75), min(int(h * 0.75), h - 128)  # validation tiles need 128 rows
    regions = {"train": (slice(0, val_row), slice(0, test_col)), "val": (slice(val_row, h), slice(0, test_col)),
               "test": (slice(0, h), slice(test_col, w))}
    for split, (rows, cols) in regions.items():
        for kind, array in (("source", source), ("target", target)):
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(folder / f"{dataset}.tif", array[:, rows, cols], metadata={"axes": "CYX"})


def run(args: list[str], cwd: Path) -> None:
    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])


def train_and_evaluate(dataset: str, recipe: str, root: Path, minutes: float, quick: bool) -> dict:
    run_dir, eval_dir = root / f"{dataset}_{recipe}_train", root / f"{dataset}_{recipe}_eval"
    data = [f"data.source_dir={root / 'train' / 'source'}", f"data.target_dir={root / 'train' / 'target'}",
            f"data.split.val={{source_dir: {root / 'val' / 'source'}, target_dir: {root / 'val' / 'target'}}}",
            f"data.split.test={{source_dir: {root / 'test' / 'source'}, target_dir: {root / 'test' / 'target'}}}",
            "data.patch_size=128", "data.patches_per_image=64", "data.batch_size=8", "data.label_dir=null"]
    budget = f"00:00:{int(minutes):02d}:{int(minutes % 1 * 60):02d}"
    run([str(ROOT / "train.py"), "experiment=virtual_labeling", "data=paired_folders", *data,
         "backbone.ngf=32", "model.discriminator.ndf=32", f"loss={'l1' if recipe == 'l1_only' else 'l1_adversarial'}",
         f"trainer.max_epochs={2 if quick else 1000}", f"++trainer.max_time={budget}", "trainer.check_val_every_n_epoch=2",
         "callbacks.early_stopping=null", "callbacks.progress_bar.refresh_rate=0", "print_config=false", "test=false",
         "logger=csv", f"hydra.run.dir={run_dir}"], cwd=root)
    summary = json.loads((run_dir / "summary.json").read_text())
    run([str(ROOT / "evaluate.py"), f"ckpt_path={summary['best_model_path'] or summary['last_model_path']}",
         f"hydra.run.dir={eval_dir}", "uncertainty.method=none", "report=markdown"], cwd=root)
    evaluation = json.loads((eval_dir / "summary.json").read_text())
    scores = {method: {m: stats[m]["mean"] for m in METRICS if m in stats}
              for method, stats in evaluation["metrics"].items()}
    nuclei = evaluation.get("nuclei", {}).get("pooled_over_images", {})
    for method, pooled in nuclei.items():
        scores[method].update(hallucinated=pooled["hallucinated"], missed=pooled["missed"], nuclei_tp=pooled["tp"])
    return {"epochs": summary["epochs"], "steps": summary["global_step"], "train_s": summary["duration_s"], "scores": scores}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=2.5, help="CPU training budget per model")
    parser.add_argument("--quick", action="store_true", help="two epochs per model (a smoke run)")
    args = parser.parse_args()
    results, lines = {}, []
    for dataset in ("ht29", "bbbc022"):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_splits(dataset, root)
            runs = {recipe: train_and_evaluate(dataset, recipe, root, args.minutes, args.quick)
                    for recipe in ("pix2pix", "l1_only")}
        table = {"pix2pix": runs["pix2pix"]["scores"]["model"], "l1_only": runs["l1_only"]["scores"]["model"],
                 "baseline_input": runs["pix2pix"]["scores"]["baseline_input"],
                 "baseline_mean": runs["pix2pix"]["scores"]["baseline_mean"]}
        results[dataset] = {"table": table, "runs": runs}
        p, l1 = table["pix2pix"], table["l1_only"]
        lines.append(f"{dataset}: pix2pix SSIM {p['ssim']:.3f} / r {p['pearson']:.3f} / nuclei F1 {p.get('nuclei_f1', float('nan')):.2f}, "
                     f"L1-only {l1['ssim']:.3f} / {l1['pearson']:.3f} / {l1.get('nuclei_f1', float('nan')):.2f}, "
                     f"best baseline SSIM {max(table['baseline_input']['ssim'], table['baseline_mean']['ssim']):.3f}")
    write_result("quality_virtual_labeling", {"budget_minutes_per_model": args.minutes, "quick": args.quick,
                                              "datasets": results}, "; ".join(lines))


if __name__ == "__main__":
    main()
