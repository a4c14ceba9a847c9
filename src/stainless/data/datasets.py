"""Datasets of (input, target[, instance labels]) images, for image-to-image and segmentation jobs alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from stainless.data.labelme import rasterize_labelme, read_labelme_image
from stainless.data.samples import Sample
from stainless.io import ImageReadError, normalize, read_image, read_images

MASK_MODES = ("binary", "classes", "instances", "palette", "trimap_binary", "trimap_classes")


def mask_channel(raw: np.ndarray, path, mask_mode: str) -> np.ndarray:
    """One (H, W) mask from a mask file read as (C, H, W): its only channel, the shared value of identical channels
    (grey saved as RGB), or, with ``mask_mode=palette``, one id per colour (black is background).

    Raises:
        ImageReadError: a colour mask whose channels differ, unless ``mask_mode=palette``.
    """
    if raw.shape[0] == 1:
        return raw[0]
    if mask_mode == "palette":
        colours = np.moveaxis(raw, 0, -1).reshape(-1, raw.shape[0])
        unique, ids = np.unique(colours, axis=0, return_inverse=True)
        background = np.flatnonzero((unique == 0).all(1))
        ids = ids.reshape(raw.shape[1:]) + 1
        if background.size:
            ids[ids == background[0] + 1] = 0
            ids[ids > background[0] + 1] -= 1
        return ids.astype(np.float32)
    if all(np.array_equal(raw[0], raw[c]) for c in range(1, raw.shape[0])):
        return raw[0]
    raise ImageReadError(f"{path}: a colour mask ({raw.shape[0]} channels that differ); masks hold one class or cell id "
                         "per pixel: save it as a grey image, or set data.mask_mode=palette to read each colour as one "
                         "object (black: background)")


class LoadedSample:
    """A sample's arrays: normalised input (C,H,W), target (C,H,W float, or H,W int mask), labels (H,W)."""

    __slots__ = ("source", "target", "labels")

    def __init__(self, source: np.ndarray, target: np.ndarray | None, labels: np.ndarray | None):
        self.source, self.target, self.labels = source, target, labels


def load_sample(
    sample: Sample,
    normalization: Mapping[str, Any],
    target_type: str = "image",
    channel_axis: int | str = "auto",
    mask_mode: str = "binary",
    label_map: Mapping[str, int] | None = None,
    labelme_root: str | None = None,
) -> LoadedSample:
    """Read and normalise one sample.

    Args:
        sample: where the files are; a ``.json`` source is a LabelMe file (image and shapes).
        normalization: keyword arguments of :func:`stainless.io.normalize` (applied to images, never to masks).
        target_type: ``"image"`` (normalised like the input) or ``"mask"`` (integer classes).
        channel_axis: see :func:`stainless.io.read_image`.
        mask_mode: how mask files are read: ``binary`` (any non-zero value is foreground), ``classes``
            (values are class indices), ``instances`` (values are cell ids: foreground + instance labels), or
            the Oxford-IIIT Pet trimaps: ``trimap_binary`` (pet and border vs background) and ``trimap_classes``
            (background 0, pet 1, border 2).
        label_map: LabelMe label -> class (None: every shape is class 1).
        labelme_root: the folder LabelMe ``imagePath`` may not leave, unless the sample names its own
            (``labelme_samples`` does); default: each JSON's folder.

    Raises:
        ImageReadError: unreadable files, or input, target and labels of different sizes.
    """
    loaded = _load_field(sample, normalization, target_type, channel_axis, mask_mode, label_map, labelme_root)
    if sample.region is None:
        return loaded
    top, left, height, width = sample.region
    crop = (slice(top, top + height), slice(left, left + width))
    full = loaded.source.shape[-2:]
    if top + height > full[0] or left + width > full[1]:
        raise ImageReadError(f"{sample.source}: region {sample.region} lies outside the image ({full[0]}x{full[1]})")
    return LoadedSample(
        np.ascontiguousarray(loaded.source[(..., *crop)]),
        None if loaded.target is None else np.ascontiguousarray(loaded.target[(..., *crop)]),
        None if loaded.labels is None else np.ascontiguousarray(loaded.labels[crop]),
    )


def _load_field(sample, normalization, target_type, channel_axis, mask_mode, label_map, labelme_root) -> LoadedSample:
    # the whole field, normalised as a whole: the regions of one field share its intensity scale
    if sample.source.suffix.lower() == ".json":
        raw = read_labelme_image(sample.source, sample.meta.get("labelme_root", labelme_root), sample.source_channels)
        instances, classes = rasterize_labelme(sample.source, raw.shape[-2:], label_map)
        return LoadedSample(normalize(raw, **normalization), classes.astype(np.int64), instances.astype(np.int64))
    source = normalize(read_images(sample.source_files, sample.source_channels, channel_axis), **normalization)
    target = labels = None
    if sample.target is not None:
        raw = read_images(sample.target_files, sample.target_channels, channel_axis)
        if target_type == "image":
            target = normalize(raw, **normalization)
        else:
            if mask_mode not in MASK_MODES:
                raise ValueError(f"data.mask_mode: unknown {mask_mode!r}; use one of {', '.join(MASK_MODES)}")
            values = mask_channel(raw, sample.target, mask_mode).astype(np.int64)
            if mask_mode == "trimap_binary":  # Oxford-IIIT Pet: 1 pet, 2 background, 3 border
                target = ((values == 1) | (values == 3)).astype(np.int64)
            elif mask_mode == "trimap_classes":  # -> 0 background, 1 pet, 2 border
                target = np.select([values == 1, values == 3], [1, 2], 0).astype(np.int64)
            else:
                target = values if mask_mode == "classes" else (values > 0).astype(np.int64)
            if mask_mode in ("instances", "palette") and sample.labels is None:
                labels = values
        if target.shape[-2:] != source.shape[-2:]:
            raise ImageReadError(
                f"{sample.target}: size {target.shape[-2:]} differs from its input {sample.source} "
                f"({source.shape[-2:]})"
            )
    if sample.labels is not None:
        labels = mask_channel(read_image(sample.labels), sample.labels, "instances").astype(np.int64)
        if labels.shape != source.shape[-2:]:
            raise ImageReadError(f"{sample.labels}: size {labels.shape} differs from its input {sample.source}")
    return LoadedSample(source, target, labels)


def build_transforms(specs: Sequence[Mapping[str, Any]] | None) -> list[A.BasicTransform]:
    """Albumentations transforms from a list of ``{_target_: albumentations.X, ...}`` mappings."""
    from hydra.utils import instantiate

    return [instantiate(dict(spec)) for spec in (specs or [])]


def grid_starts(length: int, patch: int, stride: int | None = None) -> list[int]:
    """Start offsets of patches covering ``length`` (the last one flush with the end)."""
    stride = stride or patch
    if length <= patch:
        return [0]
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def _pad_to(array: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Pad the last two axes of ``array`` up to ``size`` (images reflect, masks take zeros)."""
    pad_h, pad_w = max(0, size - array.shape[-2]), max(0, size - array.shape[-1])
    if not pad_h and not pad_w:
        return array
    widths = [(0, 0)] * (array.ndim - 2) + [(0, pad_h), (0, pad_w)]
    return np.pad(array, widths, mode=mode)


class PairedImageDataset(Dataset):
    """Patches of paired images for training (random crops, augmented) or evaluation (a fixed grid).

    Items are dicts with ``source`` (float C,H,W), ``target`` (float C,H,W, or int64 H,W for masks), ``labels``
    (int64 H,W, when the samples have instance labels), ``index`` (the sample's position) and ``name``.

    Args:
        samples: the fields of view.
        normalization: see :func:`load_sample`.
        patch_size: side of the square patches.
        train: random crops with augmentation; otherwise a deterministic grid of patches covering each image.
        patches_per_image: random crops drawn from each image per epoch (train only); overrides
            ``samples_per_epoch`` when set.
        samples_per_epoch: random crops per epoch (train only), from the images in proportion to their areas.
        foreground_fraction: share of training crops centred on a random foreground pixel (see :func:`foreground`).
        max_tiles: evaluation only: keep at most this many grid tiles, a choice fixed by ``seed``.
        seed: fixes the choice of evaluation tiles and the foreground pixel sample.
        geometric: albumentations transforms applied identically to input, target and labels.
        intensity: albumentations transforms applied to the input only.
        target_type: ``"image"`` or ``"mask"``.
        cache: keep decoded images in memory (per worker process).
        channel_axis: see :func:`stainless.io.read_image`.
        load_options: ``mask_mode`` and ``label_map`` of :func:`load_sample`.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        normalization: Mapping[str, Any],
        patch_size: int,
        train: bool,
        patches_per_image: int | None = 1,
        geometric: Sequence[Mapping[str, Any]] | None = None,
        intensity: Sequence[Mapping[str, Any]] | None = None,
        target_type: str = "image",
        cache: bool = True,
        channel_axis: int | str = "auto",
        *,
        samples_per_epoch: int | None = None,
        foreground_fraction: float = 0.0,
        max_tiles: int | None = None,
        seed: int = 0,
        **load_options: Any,
    ):
        self.samples = list(samples)
        self.load_options = load_options
        self.normalization = dict(normalization)
        self.patch_size = patch_size
        self.train = train
        self.patches_per_image = patches_per_image
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError(f"data.foreground_fraction={foreground_fraction}: must be between 0 and 1")
        self.foreground_fraction = foreground_fraction
        self.seed = seed
        self._foreground: dict[int, np.ndarray] = {}
        self._areas: np.ndarray | None = None
        self.target_type = target_type
        self.cache = cache
        self.channel_axis = channel_axis
        self._cache: dict[int, LoadedSample] = {}
        targets = {"target": "image" if target_type == "image" else "mask", "labels": "mask"}
        self.geometric = A.Compose(build_transforms(geometric), additional_targets=targets) if train else None
        self.intensity = A.Compose(build_transforms(intensity)) if train else None
        self.index: list[tuple[int, int, int]] = []  # (sample, top, left)
        if train and patches_per_image:
            self.index = [(i, -1, -1) for i in range(len(self.samples)) for _ in range(patches_per_image)]
        elif train:
            if not samples_per_epoch or samples_per_epoch < 1:
                raise ValueError("data.samples_per_epoch: set a positive number of crops per epoch "
                                 "(or data.patches_per_image)")
            self.index = [(-1, -1, -1)] * (samples_per_epoch if self.samples else 0)  # image drawn per item
        else:
            for i in range(len(self.samples)):
                height, width = self.load(i).source.shape[-2:]
                self.index += [
                    (i, top, left)
                    for top in grid_starts(height, patch_size)
                    for left in grid_starts(width, patch_size)
                ]
            if max_tiles is not None and len(self.index) > max_tiles:
                keep = np.sort(np.random.default_rng(seed).choice(len(self.index), max_tiles, replace=False))
                self.index = [self.index[k] for k in keep]

    def __len__(self) -> int:
        return len(self.index)

    def load(self, i: int) -> LoadedSample:
        """The decoded, normalised arrays of sample ``i``."""
        if i in self._cache:
            return self._cache[i]
        loaded = load_sample(self.samples[i], self.normalization, self.target_type, self.channel_axis, **self.load_options)
        if self.train and min(loaded.source.shape[-2:]) < self.patch_size:
            raise ImageReadError(
                f"{self.samples[i].source}: image size {loaded.source.shape[-2:]} is smaller than the patch size "
                f"{self.patch_size}; lower data.patch_size"
            )
        if self.cache:
            self._cache[i] = loaded
        return loaded

    def pixels(self) -> int:
        """Pixels of all fields of this dataset (decodes them, as training does)."""
        return int(self.areas().sum())

    def areas(self) -> np.ndarray:
        if self._areas is None:
            self._areas = np.array([np.prod(self.load(i).source.shape[-2:]) for i in range(len(self.samples))], float)
        return self._areas

    def foreground(self, i: int) -> np.ndarray:
        """Flat indices of (up to 100,000 of) the foreground pixels of sample ``i``: its instance labels or mask
        where it has them, else target pixels above the target's Otsu threshold (channels averaged)."""
        if i not in self._foreground:
            loaded = self.load(i)
            if loaded.labels is not None:
                mask = loaded.labels > 0
            elif loaded.target is not None and self.target_type != "image":
                mask = loaded.target > 0
            elif loaded.target is not None:
                from skimage.filters import threshold_otsu

                intensity = loaded.target.mean(0)
                mask = (intensity > threshold_otsu(intensity) if intensity.max() > intensity.min()
                        else np.zeros(intensity.shape, bool))
            else:
                mask = np.zeros(loaded.source.shape[-2:], bool)
            flat = np.flatnonzero(mask)
            if flat.size > 100_000:
                flat = np.sort(np.random.default_rng(self.seed).choice(flat, 100_000, replace=False))
            self._foreground[i] = flat
        return self._foreground[i]

    def _random_crop(self, i: int, rng: np.random.Generator) -> tuple[int, int, int]:
        """(image, top, left) of a training crop; the image drawn by area when the epoch is sized by samples."""
        if i < 0:
            areas = self.areas()
            i = int(rng.choice(len(areas), p=areas / areas.sum()))
        height, width = self.load(i).source.shape[-2:]
        p = self.patch_size
        if self.foreground_fraction and rng.random() < self.foreground_fraction and (fg := self.foreground(i)).size:
            y, x = divmod(int(fg[rng.integers(fg.size)]), width)
            return i, int(np.clip(y - p // 2, 0, height - p)), int(np.clip(x - p // 2, 0, width - p))
        return i, int(rng.integers(0, height - p + 1)), int(rng.integers(0, width - p + 1))

    def __getitem__(self, item: int) -> dict[str, Any]:
        i, top, left = self.index[item]
        p = self.patch_size
        if self.train:
            # One seed per item: a draw from torch's generator (reproducible under seed_everything(workers=True)
            # whatever the number of workers, different at every epoch) mixed with the item index. The index keeps
            # the processes of a DDP run apart: they share the seed, so the draw alone gave every rank the same crops.
            draw = int(torch.randint(0, 2**31 - 1, (1,)).item())
            seed = int(np.random.SeedSequence([draw, int(item)]).generate_state(1)[0])
            i, top, left = self._random_crop(i, np.random.default_rng(seed))
        loaded = self.load(i)
        crop = (slice(top, top + p), slice(left, left + p))
        source = _pad_to(loaded.source[(..., *crop)], p, "reflect")
        target = None
        if loaded.target is not None:
            target = _pad_to(loaded.target[(..., *crop)], p, "reflect" if self.target_type == "image" else "constant")
        labels = _pad_to(loaded.labels[crop], p, "constant") if loaded.labels is not None else None
        if self.train:
            source, target, labels = self._augment(seed, source, target, labels)
        item_dict: dict[str, Any] = {
            "source": torch.from_numpy(np.ascontiguousarray(source, dtype=np.float32)),
            "index": i,
            "top": top,
            "left": left,
            "name": self.samples[i].name,
        }
        if target is not None:
            dtype = np.float32 if self.target_type == "image" else np.int64
            item_dict["target"] = torch.from_numpy(np.ascontiguousarray(target, dtype=dtype))
        if labels is not None:
            item_dict["labels"] = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
        return item_dict

    def _augment(self, seed: int, source, target, labels):
        """Same geometric transform on all arrays, intensity transforms on the input only (HWC for albumentations)."""
        data = {"image": np.moveaxis(source, 0, -1)}
        if target is not None:
            data["target"] = np.moveaxis(target, 0, -1) if self.target_type == "image" else target.astype(np.int32)
        if labels is not None:
            data["labels"] = labels.astype(np.int32)
        self.geometric.set_random_seed(seed)
        out = self.geometric(**data)
        self.intensity.set_random_seed(seed + 1)
        image = self.intensity(image=out["image"])["image"]
        source = np.moveaxis(image.reshape(*image.shape[:2], -1), -1, 0)
        if target is not None:
            t = out["target"]
            target = np.moveaxis(t.reshape(*t.shape[:2], -1), -1, 0) if self.target_type == "image" else t
        if labels is not None:
            labels = out["labels"]
        return source, target, labels
