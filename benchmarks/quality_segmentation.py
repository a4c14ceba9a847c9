"""Segmentation quality on real images: the fluorescence images of the DSB 2018 subset.

7. The fluorescence images (grey, dark background) are split by a fixed seed into training, validation and
   test images. The default segmentation recipe (U-Net, ResNet-18 encoder from random init: no ImageNet weights
   here, weighted BCE + Jaccard, light augmentation) trains under a CPU time budget; evaluate.py scores the test
   images: pixel IoU and object F1 (IoU >= 0.5), against an automatic-threshold baseline (Gaussian smoothing,
   Otsu threshold, distance-transform watershed: stainless's classical nuclei detector).

The data is read where it lies (../shared/data); grey copies and masks go to a temporary folder.
Run from the repository root: .venv/bin/python benchmarks/quality_segmentation.py [--minutes 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
from common import ROOT, SHARED_DATA, write_result

from stainless.io import normalize
from stainless.metrics.nuclei import NucleusDetector
from stainless.metrics.objects import match_objects

DSB = SHARED_DATA / "dsb2018_stage1_subset"


def fluorescence_images() -> list[str]:
    """Ids of the grey, dark-background images (the 'fluo' category of the subset)."""
    ids = []
    for path in sorted((DSB / "images").glob("*.png")):
        rgb = iio.imread(path)[..., :3].astype(np.int16)
        grey = (np.abs(rgb[..., 0] - rgb[..., 1]).max() == 0) and (np.abs(rgb[..., 1] - rgb[..., 2]).max() == 0)
        if grey and np.median(rgb[..., 0]) < 80:
            ids.append(path.stem)
    return ids


def write_split(ids: list[str], root: Path) -> dict[str, list[str]]:
    rng = np.random.default_rng(2018)
    order = list(rng.permutation(ids))
    split = {"test": order[:4], "val": order[4:6], "train": order[6:]}
    for name, members in split.items():
        for sub in ("images", "masks"):
            (root / name / sub).mkdir(parents=True, exist_ok=True)
        for id_ in members:
            tifffile.imwrite(root / name / "images" / f"{id_}.tif", iio.imread(DSB / "images" / f"{id_}.png")[..., 0])
            tifffile.imwrite(root / name / "masks" / f"{id_}.tif", tifffile.imread(DSB / "labels" / f"{id_}.tif"))
    return split


def baseline(root: Path, ids: list[str]) -> dict:
    """Classical detector on each test image: pixel IoU and object F1 at IoU 0.5, averaged over images."""
    detector = NucleusDetector()
    ious, f1s = [], []
    for id_ in ids:
        image = normalize(tifffile.imread(root / "test" / "images" / f"{id_}.tif")[None].astype(np.float32))[0]
        truth = tifffile.imread(root / "test" / "masks" / f"{id_}.tif").astype(np.int64)
        found = detector(image)
        union = ((found > 0) | (truth > 0)).sum()
        ious.append(float(((found > 0) & (truth > 0)).sum() / union) if union else 1.0)
        f1s.append(match_objects(truth, found)["by_threshold"][0.5]["f1"])
    return {"iou": float(np.mean(ious)), "object_f1": float(np.mean(f1s))}


def run(args: list[str], cwd: Path) -> None:
    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=3.0, help="CPU training budget")
    parser.add_argument("--quick", action="store_true", help="two epochs (a smoke run)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ids = fluorescence_images()
        split = write_split(ids, root)

        def folders(name: str) -> str:
            return f"{{source_dir: {root / name / 'images'}, target_dir: {root / name / 'masks'}}}"

        budget = f"00:00:{int(args.minutes):02d}:{int(args.minutes % 1 * 60):02d}"
        run([str(ROOT / "train.py"), "experiment=rbc_segmentation", "data=masks", "data.mask_mode=instances",
             f"data.source_dir={root / 'train' / 'images'}", f"data.target_dir={root / 'train' / 'masks'}",
             f"data.split.val={folders('val')}", f"data.split.test={folders('test')}",
             "data.patch_size=128", "data.patches_per_image=16", "data.batch_size=8",
             f"trainer.max_epochs={2 if args.quick else 1000}", f"++trainer.max_time={budget}",
             "callbacks.early_stopping=null", "callbacks.progress_bar.refresh_rate=0", "print_config=false",
             "test=false", "logger=csv", f"hydra.run.dir={root / 'train_run'}"], cwd=root)
        summary = json.loads((root / "train_run" / "summary.json").read_text())
        run([str(ROOT / "evaluate.py"), f"ckpt_path={summary['best_model_path'] or summary['last_model_path']}",
             f"hydra.run.dir={root / 'eval'}", "report=markdown"], cwd=root)
        evaluation = json.loads((root / "eval" / "summary.json").read_text())
        model = {k: evaluation["metrics"]["model"][k]["mean"] for k in ("iou", "object_f1", "dice", "precision", "recall")
                 if k in evaluation["metrics"]["model"]}
        threshold = baseline(root, split["test"])
    record = {"images": {k: len(v) for k, v in split.items()}, "fluorescence_ids": ids, "test_ids": split["test"],
              "budget_minutes": args.minutes, "epochs": summary["epochs"], "steps": summary["global_step"],
              "model": model, "otsu_watershed_baseline": threshold}
    write_result("quality_segmentation", record,
                 f"DSB2018 fluorescence ({len(split['test'])} test images): U-Net IoU {model['iou']:.3f}, object F1 "
                 f"{model['object_f1']:.3f}; Otsu+watershed IoU {threshold['iou']:.3f}, object F1 {threshold['object_f1']:.3f}")


if __name__ == "__main__":
    main()
