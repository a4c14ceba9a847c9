"""The validation pass: every sample checked before training starts, each problem named with its file.

Fast by default (``headers``): image headers give shapes, sizes and channel counts without decoding; only
files whose values matter are decoded (masks, for their class values; floating-point images, for NaN/Inf;
LabelMe files, for their shapes). ``full`` decodes everything, which also finds files whose header is intact
but whose pixel data is truncated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_warn

from stainless.data.datasets import MASK_MODES, load_sample, mask_channel
from stainless.data.samples import Sample
from stainless.io import ImageReadError, images_info, read_images

LEVELS = ("headers", "full", "none")
ON_ERROR = ("stop", "skip")
TRIMAP_VALUES = (1, 2, 3)  # Oxford-IIIT Pet: pet, background, border


def mask_problem(values: np.ndarray) -> str | None:
    """Why ``values`` (H, W) cannot be a mask of class or cell ids, or None when it can.

    A mask holds whole numbers and is piecewise constant: inside an object every pixel has the object's id, so most
    neighbouring pixels are equal. An intensity image (a fluorescence target given where a mask belongs) has
    fractional values, or many distinct values that change from pixel to pixel.
    """
    if np.issubdtype(values.dtype, np.floating) and not np.array_equal(values, np.round(values)):
        return "has fractional values: an intensity image, not a mask of class or cell ids"
    distinct = np.unique(values).size
    if distinct <= 2 or values.shape[-1] < 2:
        return None
    equal = float((values[:, 1:] == values[:, :-1]).mean())
    if equal < 0.5:
        return (f"has {distinct} distinct values and only {equal:.0%} of neighbouring pixels equal: an intensity "
                "image, not a mask of class or cell ids")
    return None


def _mask_values(path, values: np.ndarray, mask_mode: str, classes: int | None) -> None:
    if (values < 0).any():
        raise ImageReadError(f"{path}: mask has negative values ({int(values.min())})")
    if problem := mask_problem(values):
        raise ImageReadError(f"{path}: this mask {problem} (masks: 0 background, then class or cell ids)")
    if mask_mode == "classes":
        allowed = max(classes or 1, 2)  # binary models (classes null or 1) take 0 and 1
        if values.max() >= allowed:
            raise ImageReadError(
                f"{path}: mask value {int(values.max())} is outside the configured classes 0..{allowed - 1} "
                "(set model.classes, or data.mask_mode=binary)"
            )
    elif mask_mode.startswith("trimap") and not np.isin(values, TRIMAP_VALUES).all():
        bad = sorted(set(np.unique(values).tolist()) - set(TRIMAP_VALUES))[:5]
        raise ImageReadError(f"{path}: trimap values {bad} are not 1 (pet), 2 (background) or 3 (border)")


def check_sample(sample: Sample, options: Mapping[str, Any], level: str = "headers") -> tuple[int, int | None]:
    """Raise :class:`ImageReadError` (file and reason) for the first problem of one sample.

    Args:
        options: the DataModule's settings (``patch_size``, ``channel_axis``, ``target_type``, ``mask_mode``,
            ``mask_classes``, ``label_map``, ``normalization``).

    Returns:
        the number of input channels and of target image channels (None for masks and samples without target).
    """
    target_channels = None
    patch = options.get("patch_size")
    axis = options.get("channel_axis", "auto")
    mask_mode = options.get("mask_mode", "binary")
    if mask_mode not in MASK_MODES:
        raise ValueError(f"data.mask_mode: unknown {mask_mode!r}; use one of {', '.join(MASK_MODES)}")
    if sample.source.suffix.lower() == ".json" or level == "full":
        loaded = load_sample(sample, options.get("normalization") or {}, options.get("target_type", "image"), axis,
                             mask_mode, options.get("label_map"))
        size, source_channels = loaded.source.shape[-2:], loaded.source.shape[0]
        if loaded.target is not None and loaded.target.ndim == 3:
            target_channels = loaded.target.shape[0]
        if loaded.target is not None and loaded.target.ndim == 2 and sample.source.suffix.lower() == ".json":
            _mask_values(sample.source, loaded.target, "classes", options.get("mask_classes") or _labelme_classes(options))
    else:
        source_shape, source_dtype = images_info(sample.source_files, sample.source_channels, axis)
        size, source_channels = source_shape[-2:], source_shape[0]
        floats = [(sample.source_files, sample.source_channels)] if np.issubdtype(source_dtype, np.floating) else []
        for files, channels in ((sample.target_files, sample.target_channels), ((sample.labels,) if sample.labels else (), None)):
            if not files:
                continue
            shape, dtype = images_info(files, channels, axis)
            if shape[-2:] != size:
                raise ImageReadError(f"{files[0]}: size {shape[-2:]} differs from its input {sample.source} ({size})")
            if files == sample.target_files and options.get("target_type", "image") == "image":
                target_channels = shape[0]
            if files == sample.target_files and np.issubdtype(dtype, np.floating):
                floats.append((files, channels))
        for files, channels in floats:
            read_images(files, channels, axis)  # decodes: finds NaN/Inf pixels
    if sample.target is not None and options.get("target_type") == "mask" and sample.source.suffix.lower() != ".json":
        raw = read_images(sample.target_files, sample.target_channels, axis)
        values = mask_channel(raw, sample.target, mask_mode)
        if mask_mode != "palette":
            _mask_values(sample.target, values, mask_mode, options.get("mask_classes"))
    if sample.labels is not None:
        labels = mask_channel(read_images(sample.labels), sample.labels, "instances")
        if problem := mask_problem(labels):
            raise ImageReadError(f"{sample.labels}: this label image {problem} (labels: 0 background, then cell ids)")
    decoded = sample.source.suffix.lower() == ".json" or level == "full"  # load_sample has cut the region already
    if sample.region is not None and not decoded:  # a region of the field (split.mode=regions, cross-validation)
        top, left, height, width = sample.region
        if top + height > size[0] or left + width > size[1]:
            raise ImageReadError(f"{sample.source}: region {sample.region} lies outside the image ({size[0]}x{size[1]})")
        size = (height, width)
    if patch and min(size) < patch:
        what = f"region {sample.name} of {size[0]}x{size[1]} pixels" if sample.region else f"image of {size[0]}x{size[1]} pixels"
        raise ImageReadError(f"{sample.source}: {what} is smaller than data.patch_size={patch}; lower data.patch_size "
                             f"to at most {min(size)} (a multiple of what the network needs)")
    return source_channels, target_channels


def _odd_channels(checked: list[tuple[Sample, tuple[int, int | None]]]) -> dict[int, str]:
    """Samples (by ``id``) whose input (or target image) channel count differs from most samples', with the reason."""
    from collections import Counter

    odd: dict[int, str] = {}
    for index, role, setting in ((0, "input", "data.source_channels"), (1, "target", "data.target_channels")):
        found = [(sample, c[index]) for sample, c in checked if c[index] is not None]
        if len({n for _, n in found}) < 2:
            continue
        usual, _ = Counter(n for _, n in found).most_common(1)[0]
        example = next(s for s, n in found if n == usual)
        for sample, n in found:
            if n != usual and id(sample) not in odd:
                path, other = (sample.source, example.source) if role == "input" else (sample.target, example.target)
                odd[id(sample)] = (f"{path}: {n} {role} channel(s), but {other} (like most) has {usual}; every {role} needs "
                               f"the same channels: choose them with {setting}=[...] (e.g. [0]) or convert the odd files")
    return odd


def _labelme_classes(options: Mapping[str, Any]) -> int:
    label_map = options.get("label_map") or {}
    return max(label_map.values(), default=1) + 1


def validate_samples(
    samples: dict[str, list[Sample]], options: Mapping[str, Any], level: str = "headers", on_error: str = "stop",
    skip_hint: str | None = "data.on_error=skip would leave this sample out",
) -> dict[str, list[Sample]]:
    """Check every sample of every split; stop at the first problem, or drop bad samples with a warning each.

    Returns:
        the samples that passed (all of them with ``on_error="stop"``).

    Raises:
        ImageReadError: the first problem (``stop``), or a split left empty by skipping.
    """
    if level not in LEVELS:
        raise ValueError(f"data.validation: unknown {level!r}; use one of {', '.join(LEVELS)}")
    if on_error not in ON_ERROR:
        raise ValueError(f"data.on_error: unknown {on_error!r}; use stop or skip")
    if level == "none":
        return samples
    kept: dict[str, list[Sample]] = {}
    checked: list[tuple[Sample, tuple[int, int | None]]] = []  # channels of each sample, compared once all are read
    skipped = 0
    total = sum(len(v) for v in samples.values())
    for stage, stage_samples in samples.items():
        kept[stage] = []
        for sample in stage_samples:
            try:
                checked.append((sample, check_sample(sample, options, level)))
            except ImageReadError as problem:
                if on_error == "stop":
                    raise ImageReadError(f"{problem} ({skip_hint})" if skip_hint else str(problem)) from None
                rank_zero_warn(f"Skipping sample {sample.name!r}: {problem}")
                skipped += 1
                continue
            kept[stage].append(sample)
    odd = _odd_channels(checked)
    for stage, stage_samples in samples.items():
        for sample in [s for s in kept[stage] if id(s) in odd]:
            if on_error == "stop":
                raise ImageReadError(f"{odd[id(sample)]} ({skip_hint})" if skip_hint else odd[id(sample)])
            rank_zero_warn(f"Skipping sample {sample.name!r}: {odd[id(sample)]}")
            kept[stage].remove(sample)
            skipped += 1
        if stage_samples and not kept[stage]:
            raise ImageReadError(f"every {stage} sample was skipped as unusable ({len(stage_samples)}); see the warnings")
    if skipped:
        rank_zero_warn(f"data.on_error=skip: skipped {skipped} of {total} samples")
    return kept
