"""One DataModule for both jobs: paired folders, multi-channel files, or generated synthetic data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from stainless.data.datasets import PairedImageDataset
from stainless.data.samples import Sample, labelme_samples, multichannel_samples, paired_folder_samples, split_samples
from stainless.data.validate import validate_samples

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
        source_dir, target_dir, label_dir: folders of input images, target images and instance labels.
        files_dir: folder of multi-channel files (instead of source_dir/target_dir).
        source_channels, target_channels: channel indices to read (None: all channels).
        channel_axis: ``"auto"`` or the channel axis in the files.
        target_type: ``"image"`` (virtual labeling) or ``"mask"`` (segmentation classes).
        normalization: keyword arguments of :func:`stainless.io.normalize`.
        split: ``val_fraction``, ``test_fraction``, ``seed``; or ``val``/``test`` mappings with their own
            ``source_dir``/``target_dir``/``label_dir``/``files_dir`` to use given folders.
        patch_size: training crops and evaluation tiles (pixels).
        patches_per_image: random crops per training image per epoch.
        batch_size, num_workers, pin_memory, persistent_workers: DataLoader settings.
        augmentation: ``geometric`` and ``intensity`` lists of albumentations transforms.
        synthetic: when set, ``generate`` the named synthetic dataset (``kind`` and generator arguments)
            into ``root`` on first use.
        cache: keep decoded images in memory.
        labelme_dir: folder of LabelMe JSON files (instead of source/target folders); shapes become masks.
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
        source_dir: str | None = None,
        target_dir: str | None = None,
        label_dir: str | None = None,
        files_dir: str | None = None,
        source_channels: Sequence[int] | None = None,
        target_channels: Sequence[int] | None = None,
        channel_axis: int | str = "auto",
        target_type: str = "image",
        normalization: Mapping[str, Any] | None = None,
        split: Mapping[str, Any] | None = None,
        patch_size: int = 128,
        patches_per_image: int = 4,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        augmentation: Mapping[str, Any] | None = None,
        synthetic: Mapping[str, Any] | None = None,
        cache: bool = True,
        labelme_dir: str | None = None,
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
        if spec.get("files_dir"):
            return multichannel_samples(spec["files_dir"], hp.source_channels, hp.target_channels, spec.get("label_dir"))
        if not spec.get("source_dir"):
            raise ValueError("data: set source_dir (with target_dir), files_dir or labelme_dir")
        return paired_folder_samples(
            spec["source_dir"], spec.get("target_dir"), spec.get("label_dir"), hp.source_channels, hp.target_channels
        )

    def find_samples(self) -> dict[str, list[Sample]]:
        """The train/val/test samples, from given folders or a seeded split."""
        hp = self.hparams
        split = dict(hp.split or {})
        everything = self._find(hp)
        if split.get("val") or split.get("test"):
            return {
                "train": everything,
                "val": self._find(split["val"]) if split.get("val") else [],
                "test": self._find(split["test"]) if split.get("test") else [],
            }
        return split_samples(
            everything, split.get("val_fraction", 0.15), split.get("test_fraction", 0.15), split.get("seed", 0),
            split.get("mode", "random"),
        )

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
            geometric=augmentation.get("geometric"), intensity=augmentation.get("intensity"), **common,
        )
        for stage_name in ("val", "test"):
            self.datasets[stage_name] = PairedImageDataset(self.samples[stage_name], train=False, **common)

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
