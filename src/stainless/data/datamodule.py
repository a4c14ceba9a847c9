"""One DataModule for both jobs: paired folders, multi-channel files, or generated synthetic data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from stainless.data.datasets import PairedImageDataset
from stainless.data.samples import (
    Sample,
    field_samples,
    image_folds,
    labelme_samples,
    multichannel_samples,
    paired_folder_samples,
    region_folds,
    region_split,
    sample_size,
    split_samples,
)
from stainless.data.validate import validate_samples

SPLIT_MODES = ("random", "last", "regions")


def download_oxford_pet(root: str) -> None:
    """Download Oxford-IIIT Pet (images + trimaps, about 800 MB) with torchvision, into ``root``."""
    from torchvision.datasets import OxfordIIITPet

    OxfordIIITPet(str(Path(root).parent), split="trainval", target_types="segmentation", download=True)


DOWNLOADERS = {"oxford_pet": download_oxford_pet}
GENERATORS = {
    "nuclei": "stainless.data.synthetic.generate_nuclei_dataset",
    "rbc": "stainless.data.synthetic_rbc.generate_rbc_dataset",
}


class MicroscopyDataModule(L.LightningDataModule):
    """Finds, splits and serves paired microscopy images.

    Input/target pairs come from two folders matched by file stem (``source_dir`` + ``target_dir``), or from
    the channels of multi-channel files (``files_dir`` with ``source_channels`` / ``target_channels``). The
    split is made with a fixed seed, or given as separate folders (``val_dir``/``test_dir`` holding the same
    sub-folder layout as the training root).

    Args:
        source_dir, target_dir, label_dir: folders of input images, target images and instance labels; source_dir
            and target_dir may be lists of folders whose files of one stem are stacked as channels, in order.
        files_dir: folder of multi-channel files (instead of source_dir/target_dir).
        source_channels, target_channels: channel indices to read (None: all channels).
        channel_axis: ``"auto"`` or the channel axis in the files.
        target_type: ``"image"`` (virtual labeling) or ``"mask"`` (segmentation classes).
        normalization: keyword arguments of :func:`stainless.io.normalize`.
        split: ``mode`` (``random``, ``last`` or ``regions``: every field cut into a training, a validation and a
            test region, ``gap`` pixels apart, default half a patch), ``val_fraction``, ``test_fraction``,
            ``seed``; or ``val``/``test`` mappings with their own ``source_dir``/``target_dir``/``label_dir``/
            ``files_dir`` to use given folders (a split not given is carved from the training data).
        patch_size: training crops and evaluation tiles (pixels).
        patches_per_image: random crops per training image per epoch; when set, it overrides ``samples_per_epoch``.
        samples_per_epoch: random crops per epoch whatever the number of images, drawn from the fields in
            proportion to their areas (the default way to size an epoch).
        foreground_fraction: share of the training crops centred on a foreground pixel of the target (label
            images, masks, or target pixels above the target's Otsu threshold), so sparse objects are seen.
        val_tiles: validation uses at most this many tiles of the validation fields, a seeded choice that
            stays the same at every epoch (None: every tile).
        cv: ``folds`` and ``fold`` for k-fold cross-validation (over images; over regions when there is one
            field or ``split.mode=regions``): fold ``fold`` validates, the test split stays aside.
        batch_size, num_workers, pin_memory, persistent_workers: DataLoader settings.
        augmentation: ``geometric`` and ``intensity`` lists of albumentations transforms.
        synthetic: when set, ``generate`` the named synthetic dataset (``kind`` and generator arguments)
            into ``root`` on first use.
        cache: keep decoded images in memory.
        labelme_dir: folder of LabelMe JSON files (instead of source/target folders); shapes become masks.
        fields: the fields listed one by one (instead of folders): ``{source, target, labels, name}`` each, where
            ``source`` and ``target`` may be lists of files stacked as channels (e.g. three focal planes).
        label_map: LabelMe label name -> class index (null: every shape is foreground class 1).
        mask_mode: how mask images are read: binary, classes, instances, trimap_binary or trimap_classes
            (see ``load_sample``).
        download: name of a public dataset to download into ``download_root`` when its folder is missing
            (``oxford_pet``); nothing is downloaded unless this is set.
        validation: the check of every sample before training: ``headers`` (fast), ``full`` (decode every
            file) or ``none`` (see :mod:`stainless.data.validate`).
        on_error: ``stop`` at the first bad sample (the default), or ``skip`` bad samples with a warning each.
        mask_classes: number of mask classes the model predicts (masks with other values are refused); None: binary.
    """

    def __init__(
        self,
        source_dir: str | list[str] | None = None,
        target_dir: str | list[str] | None = None,
        label_dir: str | None = None,
        files_dir: str | None = None,
        source_channels: Sequence[int] | None = None,
        target_channels: Sequence[int] | None = None,
        channel_axis: int | str = "auto",
        target_type: str = "image",
        normalization: Mapping[str, Any] | None = None,
        split: Mapping[str, Any] | None = None,
        patch_size: int = 128,
        patches_per_image: int | None = None,
        samples_per_epoch: int | None = 512,
        foreground_fraction: float = 0.0,
        val_tiles: int | None = 64,
        cv: Mapping[str, Any] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        augmentation: Mapping[str, Any] | None = None,
        synthetic: Mapping[str, Any] | None = None,
        cache: bool = True,
        labelme_dir: str | None = None,
        fields: Sequence[Mapping[str, Any]] | None = None,
        label_map: Mapping[str, int] | None = None,
        mask_mode: str = "binary",
        download: str | None = None,
        download_root: str | None = None,
        validation: str = "headers",
        on_error: str = "stop",
        mask_classes: int | None = None,
    ):
        super().__init__()
        # Plain values only (see stainless.utils.config.to_plain): checkpoints stay loadable with weights_only.
        self.save_hyperparameters()
        self.datasets: dict[str, PairedImageDataset] = {}
        self.samples: dict[str, list[Sample]] = {}

    # -- set-up -----------------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Generate the synthetic dataset if configured and missing (Lightning calls this on one process)."""
        hp = self.hparams
        if hp.download and not Path(hp.download_root or "").is_dir():
            if hp.download not in DOWNLOADERS:
                raise ValueError(f"data.download: unknown dataset {hp.download!r}; choose from {sorted(DOWNLOADERS)}")
            DOWNLOADERS[hp.download](hp.download_root)
        synthetic = hp.synthetic
        if synthetic:
            from hydra.utils import get_method

            args = dict(synthetic)
            kind = args.pop("kind")
            if kind not in GENERATORS:
                raise ValueError(f"data.synthetic.kind: unknown generator {kind!r}; choose from {sorted(GENERATORS)}")
            get_method(GENERATORS[kind])(**args)

    def _find(self, spec: Mapping[str, Any]) -> list[Sample]:
        hp = self.hparams
        if spec.get("labelme_dir"):
            return labelme_samples(spec["labelme_dir"])
        if spec.get("fields"):
            return field_samples(spec["fields"], hp.source_channels, hp.target_channels)
        if spec.get("files_dir"):
            return multichannel_samples(spec["files_dir"], hp.source_channels, hp.target_channels, spec.get("label_dir"))
        if not spec.get("source_dir"):
            raise ValueError("data: set source_dir (with target_dir), files_dir, fields or labelme_dir")
        return paired_folder_samples(
            spec["source_dir"], spec.get("target_dir"), spec.get("label_dir"), hp.source_channels, hp.target_channels
        )

    def find_samples(self) -> dict[str, list[Sample]]:
        """The train/val/test samples: given folders, a seeded split by image, regions of the fields, or a
        cross-validation fold. A split that is not given is carved from the training data.

        Raises:
            ValueError: a split that cannot be made (too few images, fields too small), with the setting to change.
        """
        hp = self.hparams
        split = dict(hp.split or {})
        mode = split.get("mode", "random")
        if mode not in SPLIT_MODES:
            raise ValueError(f"data.split.mode: unknown {mode!r}; use one of {', '.join(SPLIT_MODES)}")
        val_fraction, test_fraction = split.get("val_fraction", 0.15), split.get("test_fraction", 0.15)
        seed, gap = split.get("seed", 0), split.get("gap")
        everything = self._find(hp)
        given = {stage: self._find(split[stage]) for stage in ("val", "test") if split.get(stage)}
        folds = (hp.cv or {}).get("folds")
        if folds:
            return self._cv_split(everything, given, mode, test_fraction, seed, gap)
        if len(given) == 2:
            return {"train": everything, **given}
        fractions = {"val": 0.0 if "val" in given else val_fraction, "test": 0.0 if "test" in given else test_fraction}
        if mode == "regions" or (given and len(everything) == 1):
            try:
                carved = region_split(everything, self._sizes(everything), fractions["val"], fractions["test"],
                                      hp.patch_size, gap)
            except ValueError as error:
                if not given:
                    raise
                missing = "val" if "test" in given else "test"
                raise ValueError(f"{error}; or give the {missing} split as folders: data.split.{missing}="
                                 "{source_dir: ..., target_dir: ...}") from None
        elif given:
            missing = "val" if "test" in given else "test"
            carved = split_samples(everything, fractions["val"], fractions["test"], seed, mode)
            if not carved[missing] and fractions[missing] > 0:
                raise ValueError(f"data.split.{missing}: not given and not carved; give it as folders")
        else:
            carved = split_samples(everything, val_fraction, test_fraction, seed, mode)
        return {**carved, **given}

    def _sizes(self, samples: list[Sample]) -> list[tuple[int, int]]:
        return [sample_size(s, self.hparams.channel_axis) for s in samples]

    def _cv_split(self, everything: list[Sample], given: dict[str, list[Sample]], mode: str, test_fraction: float,
                  seed: int, gap: int | None) -> dict[str, list[Sample]]:
        hp = self.hparams
        folds, fold = int(hp.cv["folds"]), int(hp.cv.get("fold", 0))
        if folds < 2:
            raise ValueError(f"cv.folds={folds}: cross-validation needs at least 2 folds (null switches it off)")
        if not 0 <= fold < folds:
            raise ValueError(f"cv.fold={fold}: must be 0..{folds - 1} for cv.folds={folds}")
        if "val" in given:
            raise ValueError("cv.folds: the folds are the validation splits; remove data.split.val")
        by_region = mode == "regions" or len(everything) == 1
        if "test" in given:
            pool, test = everything, given["test"]
        elif by_region:
            carved = region_split(everything, self._sizes(everything), 0.0, test_fraction, hp.patch_size, gap)
            pool, test = carved["train"], carved["test"]
        else:
            carved = split_samples(everything, 0.0, test_fraction, seed)
            pool, test = carved["train"], carved["test"]
        if by_region:
            parts = [region_folds(s, size, folds, fold, hp.patch_size, gap) for s, size in zip(pool, self._sizes(pool))]
            return {"train": [s for p in parts for s in p["train"]], "val": [s for p in parts for s in p["val"]],
                    "test": test}
        return {**image_folds(pool, folds, fold, seed), "test": test}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        self.samples = validate_samples(self.find_samples(), hp, hp.validation, hp.on_error)
        augmentation = hp.augmentation or {}
        common = dict(
            normalization=hp.normalization or {}, patch_size=hp.patch_size, target_type=hp.target_type,
            cache=hp.cache, channel_axis=hp.channel_axis, **self.load_options,
        )
        self.datasets["train"] = PairedImageDataset(
            self.samples["train"], train=True, patches_per_image=hp.patches_per_image,
            samples_per_epoch=hp.samples_per_epoch, foreground_fraction=hp.foreground_fraction,
            seed=(hp.split or {}).get("seed", 0),
            geometric=augmentation.get("geometric"), intensity=augmentation.get("intensity"), **common,
        )
        self.datasets["val"] = PairedImageDataset(self.samples["val"], train=False, max_tiles=hp.val_tiles,
                                                  seed=(hp.split or {}).get("seed", 0), **common)
        self.datasets["test"] = PairedImageDataset(self.samples["test"], train=False, **common)

    def describe(self, world_size: int = 1, max_epochs: int | None = None) -> str:
        """One line a person reads at start-up: images, pixels, crops and optimiser steps per epoch and in all."""
        hp = self.hparams
        train, val = self.datasets["train"], self.datasets["val"]
        megapixels = train.pixels() / 1e6
        crops = len(train)
        per_process = -(-crops // world_size)
        steps = per_process // hp.batch_size if per_process > hp.batch_size else 1
        how = (f"{hp.patches_per_image} per image" if hp.patches_per_image else "data.samples_per_epoch")
        total = f"{steps * max_epochs} in {max_epochs} epochs" if max_epochs and max_epochs > 0 else "until the time limit"
        val_fields = len(self.samples["val"])
        return (f"Data: {len(self.samples['train'])} training field(s), {megapixels:.2f} Mpx; {crops} crops of "
                f"{hp.patch_size} px per epoch ({how}) -> {steps} optimiser steps per epoch, {total}; validation: "
                f"{len(val)} tiles of {val_fields} field(s); test: {len(self.samples['test'])} field(s)")

    @property
    def load_options(self) -> dict[str, Any]:
        """Mask and LabelMe reading options shared by every dataset of this module."""
        hp = self.hparams
        return {"mask_mode": hp.mask_mode, "label_map": hp.label_map}

    def positive_fraction(self) -> float:
        """Fraction of foreground pixels in the training masks (for a BCE positive-class weight)."""
        dataset = self.datasets["train"]
        counts = [(int((dataset.load(i).target > 0).sum()), dataset.load(i).target.size) for i in range(len(dataset.samples))]
        positive, total = map(sum, zip(*counts))
        return positive / max(total, 1)

    def object_scale(self) -> dict | None:
        """Diameters of the annotated objects of the training data (instance labels: LabelMe shapes, label images,
        instance masks; else the connected components of binary masks): median, 5-95%, count. None for images."""
        from skimage.measure import label

        from stainless.data.instances import object_diameters, scale_summary

        if self.hparams.target_type != "mask":
            return None
        dataset = self.datasets["train"]
        diameters = []
        for i in range(len(dataset.samples)):
            loaded = dataset.load(i)
            objects = loaded.labels if loaded.labels is not None else label(loaded.target > 0, connectivity=1)
            diameters.append(object_diameters(objects))
        return scale_summary(np.concatenate(diameters) if diameters else np.zeros(0))

    # -- shapes the model needs -------------------------------------------------------------------------------

    @property
    def in_channels(self) -> int:
        return self.datasets["train"].load(0).source.shape[0]

    @property
    def out_channels(self) -> int:
        target = self.datasets["train"].load(0).target
        return target.shape[0] if target is not None and target.ndim == 3 else 1

    # -- loaders ----------------------------------------------------------------------------------------------

    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        hp = self.hparams
        return DataLoader(
            self.datasets[stage],
            batch_size=hp.batch_size,
            shuffle=shuffle,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
            persistent_workers=hp.persistent_workers and hp.num_workers > 0,
            drop_last=shuffle and len(self.datasets[stage]) > hp.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
