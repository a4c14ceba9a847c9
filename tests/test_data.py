import json

import numpy as np
import pytest
import tifffile
import torch

from stainless.data.datamodule import MicroscopyDataModule
from stainless.data.datasets import PairedImageDataset
from stainless.data.samples import multichannel_samples, paired_folder_samples, split_samples
from stainless.data.synthetic import generate_nuclei_dataset, synthesize_tissue
from stainless.io import ImageReadError, read_image


def test_generator_is_deterministic_and_plausible(tmp_path):
    a = generate_nuclei_dataset(tmp_path / "a", n_images=2, size=64, seed=3)
    b = generate_nuclei_dataset(tmp_path / "b", n_images=2, size=64, seed=3)
    c = synthesize_tissue(4, 0, size=64)
    for kind in ("membrane", "nuclei", "labels", "cells"):
        x, y = tifffile.imread(a / kind / "img_000.tif"), tifffile.imread(b / kind / "img_000.tif")
        np.testing.assert_array_equal(x, y)
        assert x.dtype == np.uint16
    assert not np.array_equal(tifffile.imread(a / "membrane" / "img_000.tif"), c["membrane"])
    labels = tifffile.imread(a / "labels" / "img_000.tif")
    nuclei = tifffile.imread(a / "nuclei" / "img_000.tif").astype(float)
    assert len(np.unique(labels)) > 3  # several nuclei
    assert nuclei[labels > 0].mean() > 2 * nuclei[labels == 0].mean()  # nuclei are bright where labelled
    assert json.loads((a / "dataset.json").read_text())["seed"] == 3


def test_generator_reuses_and_refuses(tmp_path):
    root = generate_nuclei_dataset(tmp_path / "d", n_images=1, size=64, seed=0)
    stamp = (root / "membrane" / "img_000.tif").stat().st_mtime_ns
    generate_nuclei_dataset(root, n_images=1, size=64, seed=0)  # same parameters: untouched
    assert (root / "membrane" / "img_000.tif").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="other parameters"):
        generate_nuclei_dataset(root, n_images=1, size=64, seed=1)


def _pairs(tmp_path, stems=("a", "b", "c"), extra_target=None):
    (tmp_path / "src").mkdir()
    (tmp_path / "tgt").mkdir()
    for i, stem in enumerate(stems):
        tifffile.imwrite(tmp_path / "src" / f"{stem}.tif", np.full((40, 40), i, np.uint16))
        tifffile.imwrite(tmp_path / "tgt" / f"{stem}.tif", np.full((40, 40), 10 + i, np.uint16))
    if extra_target:
        tifffile.imwrite(tmp_path / "tgt" / f"{extra_target}.tif", np.zeros((40, 40), np.uint16))
    return tmp_path / "src", tmp_path / "tgt"


def test_pairing_by_stem(tmp_path):
    src, tgt = _pairs(tmp_path)
    samples = paired_folder_samples(src, tgt)
    assert [s.name for s in samples] == ["a", "b", "c"]
    assert all(s.source.stem == s.target.stem for s in samples)


def test_unpaired_files_are_named(tmp_path):
    src, tgt = _pairs(tmp_path, extra_target="orphan")
    with pytest.raises(ImageReadError, match="no source for target.*orphan"):
        paired_folder_samples(src, tgt)


def test_split_is_seeded_and_disjoint(tmp_path):
    src, tgt = _pairs(tmp_path, stems=[f"s{i:02d}" for i in range(20)])
    samples = paired_folder_samples(src, tgt)
    one = split_samples(samples, 0.2, 0.1, seed=5)
    two = split_samples(samples, 0.2, 0.1, seed=5)
    other = split_samples(samples, 0.2, 0.1, seed=6)
    names = {k: [s.name for s in v] for k, v in one.items()}
    assert names == {k: [s.name for s in v] for k, v in two.items()}
    assert names != {k: [s.name for s in v] for k, v in other.items()}
    assert (len(names["train"]), len(names["val"]), len(names["test"])) == (14, 4, 2)
    assert not set(names["train"]) & set(names["val"]) and not set(names["val"]) & set(names["test"])


def test_multichannel_files(tmp_path):
    (tmp_path / "files").mkdir()
    tifffile.imwrite(tmp_path / "files" / "f.tif", np.stack([np.full((8, 8), v, np.uint16) for v in (1, 2, 3)]))
    (sample,) = multichannel_samples(tmp_path / "files", [0, 1], [2])
    assert read_image(sample.source, sample.source_channels)[:, 0, 0].tolist() == [1, 2]
    assert read_image(sample.target, sample.target_channels)[:, 0, 0].tolist() == [3]


def test_paired_augmentation_moves_input_target_and_labels_together(tmp_path):
    # input = target = labels pattern: any geometric transform must keep them aligned
    pattern = np.zeros((48, 48), np.uint16)
    pattern[5:15, 8:30] = 1000
    pattern[30:44, 20:26] = 2000
    for kind in ("src", "tgt", "lab"):
        (tmp_path / kind).mkdir()
        tifffile.imwrite(tmp_path / kind / "x.tif", pattern if kind != "lab" else (pattern > 0).astype(np.uint16))
    samples = paired_folder_samples(tmp_path / "src", tmp_path / "tgt", tmp_path / "lab")
    geometric = [
        {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
        {"_target_": "albumentations.RandomRotate90", "p": 1.0},
        {"_target_": "albumentations.Affine", "rotate": [-30, 30], "p": 1.0, "interpolation": 0},
    ]
    intensity = [{"_target_": "albumentations.RandomBrightnessContrast", "brightness_limit": 0.3, "p": 1.0}]
    norm = {"mode": "range", "vmin": 0, "vmax": 2000}
    dataset = PairedImageDataset(samples, norm, 32, train=True, patches_per_image=16, geometric=geometric, intensity=intensity)
    changed = 0
    for i in range(len(dataset)):
        item = dataset[i]
        src, tgt, lab = item["source"][0], item["target"][0], item["labels"]
        # identical geometry for input and target (same code path in albumentations)...
        assert torch.equal((src - src.min()).abs() > 1e-3, tgt > 0) or tgt.max() == 0
        # ...and for the labels (mask path: OpenCV may round a boundary pixel differently)
        union = ((tgt > 0) | (lab > 0)).sum()
        assert union == 0 or ((tgt > 0) & (lab > 0)).sum() / union > 0.97
        changed += not torch.allclose(src[tgt > 0], tgt[tgt > 0]) if tgt.max() > 0 else 0
    assert changed > 0  # intensity augmentation reached the input and not the target


def test_datamodule_generates_and_serves(tmp_path):
    dm = MicroscopyDataModule(
        source_dir=str(tmp_path / "syn" / "membrane"), target_dir=str(tmp_path / "syn" / "nuclei"),
        label_dir=str(tmp_path / "syn" / "labels"), patch_size=32, patches_per_image=2, batch_size=2,
        normalization={"mode": "percentile", "low": 1, "high": 99.8},
        split={"val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
        synthetic={"kind": "nuclei", "root": str(tmp_path / "syn"), "n_images": 5, "size": 64, "seed": 0},
    )
    dm.prepare_data()
    dm.setup("fit")
    assert (dm.in_channels, dm.out_channels) == (1, 1)
    batch = next(iter(dm.train_dataloader()))
    assert batch["source"].shape == (2, 1, 32, 32) and batch["target"].shape == (2, 1, 32, 32)
    assert 0 <= float(batch["target"].min()) and float(batch["target"].max()) <= 1
    val = next(iter(dm.val_dataloader()))
    assert val["labels"].shape == (2, 32, 32)
    # validation tiles cover each 64x64 image exactly: 4 tiles of 32
    assert len(dm.datasets["val"]) == 4 * len(dm.samples["val"])
