"""Segmentation quality on real images: the fluorescence images of the DSB 2018 subset.

The fluorescence images (grey, dark background) are split by a fixed seed into training, validation and test
images. The default segmentation recipe (U-Net, ResNet-18 encoder from random init: no ImageNet weights here,
weighted BCE + Jaccard, light augmentation) trains for a fixed number of optimiser steps (not a time budget, so the
figures do not depend on the machine's load), once per seed; evaluate.py scores the test images: pixel IoU and object
F1 (IoU >= 0.5), mean +- sd over the seeds. The baseline is evaluate.py's own: Otsu's threshold of the input, split
into cells by exactly the same post-processing as the model's mask (same watershed, same sizes), so the comparison
differs only in the mask.

The data is read where it lies (../shared/data); grey copies and masks go to a temporary folder.
Run from the repository root: .venv/bin/python benchmarks/quality_segmentation.py [--epochs 5] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
from common import ROOT, SHARED_DATA, mean_sd, run, write_result

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5, help="epochs of --samples-per-epoch crops (batch 8)")
    parser.add_argument("--samples-per-epoch", type=int, default=512)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ids = fluorescence_images()
        split = write_split(ids, root)

        def folders(name: str) -> str:
            return f"{{source_dir: {root / name / 'images'}, target_dir: {root / name / 'masks'}}}"

        for seed in seeds:
            run([str(ROOT / "train.py"), "experiment=rbc_segmentation", "data=masks", "data.mask_mode=instances",
                 f"data.source_dir={root / 'train' / 'images'}", f"data.target_dir={root / 'train' / 'masks'}",
                 f"data.split.val={folders('val')}", f"data.split.test={folders('test')}",
                 "data.patch_size=128", f"data.samples_per_epoch={args.samples_per_epoch}", "data.batch_size=8",
                 f"trainer.max_epochs={args.epochs}", f"seed={seed}",
                 "callbacks.early_stopping=null", "callbacks.progress_bar.refresh_rate=0", "print_config=false",
                 "test=false", "logger=csv", f"hydra.run.dir={root / f'train_{seed}'}"], cwd=root)
            summary = json.loads((root / f"train_{seed}" / "summary.json").read_text())
            run([str(ROOT / "evaluate.py"), f"ckpt_path={summary['last_model_path']}",
                 f"hydra.run.dir={root / f'eval_{seed}'}", "report=markdown"], cwd=root)
            evaluation = json.loads((root / f"eval_{seed}" / "summary.json").read_text())
            runs.append({"seed": seed, "steps": summary["global_step"], "object_sizes": evaluation["object_sizes"],
                         **{method: {k: stats[k]["mean"] for k in ("iou", "object_f1", "dice", "precision", "recall")
                                     if k in stats}
                            for method, stats in evaluation["metrics"].items()}})

    model, otsu = ({k: mean_sd(r[method][k] for r in runs) for k in runs[0][method]}
                   for method in ("model", "baseline_otsu"))
    record = {"images": {k: len(v) for k, v in split.items()}, "fluorescence_ids": ids, "test_ids": split["test"],
              "epochs": args.epochs, "samples_per_epoch": args.samples_per_epoch, "seeds": seeds, "runs": runs,
              "model": model, "otsu_baseline_same_postprocessing": otsu,
              "model_beats_otsu": {k: model[k]["mean"] > otsu[k]["mean"] for k in ("iou", "object_f1")}}
    write_result("quality_segmentation", record,
                 f"DSB2018 fluorescence ({len(split['test'])} test images, {len(seeds)} seeds): U-Net IoU "
                 f"{model['iou']['mean']:.3f} +- {model['iou']['sd']:.3f}, object F1 {model['object_f1']['mean']:.3f} "
                 f"+- {model['object_f1']['sd']:.3f}; Otsu (same post-processing) IoU {otsu['iou']['mean']:.3f}, "
                 f"object F1 {otsu['object_f1']['mean']:.3f}")


if __name__ == "__main__":
    main()
