"""Finding samples on disk: paired folders, multi-channel files, and deterministic splits."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stainless.io import IMAGE_SUFFIXES, ImageReadError, images_info, list_images

Region = tuple[int, int, int, int]  # (top, left, height, width) in the file's pixels


@dataclass(frozen=True)
class Sample:
    """One field of view: where its input, target and (optional) instance labels are.

    ``source`` and ``target`` may be the same multi-channel file, read with different channels. ``region``
    restricts the sample to a rectangle of the field (``split.mode=regions``, cross-validation over regions).
    """

    name: str
    source: Path
    target: Path | None = None
    labels: Path | None = None
    source_channels: tuple[int, ...] | None = None
    target_channels: tuple[int, ...] | None = None
    meta: dict = field(default_factory=dict, compare=False)
    region: Region | None = None
    extra_sources: tuple[Path, ...] = ()  # further files of the field, stacked after ``source`` as channels
    extra_targets: tuple[Path, ...] = ()

    @property
    def source_files(self) -> tuple[Path, ...]:
        return (self.source, *self.extra_sources)

    @property
    def target_files(self) -> tuple[Path, ...]:
        return (self.target, *self.extra_targets) if self.target is not None else ()


def _by_stem(folder: str | Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in list_images(folder):
        if path.stem in files:
            raise ImageReadError(f"{path}: two files share the stem {path.stem!r} ({files[path.stem].name})")
        files[path.stem] = path
    return files


def _unmatched(names: Sequence[str]) -> str:
    shown = ", ".join(sorted(names)[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _folders(value: str | Path | Sequence[str | Path]) -> list[Path]:
    return [Path(value)] if isinstance(value, (str, Path)) else [Path(v) for v in value]


def _stacked_by_stem(folders: Sequence[Path], role: str) -> dict[str, tuple[Path, ...]]:
    """Files of several folders matched by stem, stacked as channels of one image (in the order of the folders)."""
    maps = [_by_stem(folder) for folder in folders]
    for folder, files in zip(folders[1:], maps[1:]):
        if missing := sorted(set(maps[0]) - set(files)):
            raise ImageReadError(f"{folder}: no file for {_unmatched(missing)} of {folders[0]} (stacked as channels of "
                                 f"one {role}); this folder holds {_unmatched(sorted(files))}")
        if extra := sorted(set(files) - set(maps[0])):
            raise ImageReadError(f"{folders[0]}: no file for {_unmatched(extra)} of {folder} (stacked as channels of "
                                 f"one {role}); this folder holds {_unmatched(sorted(maps[0]))}")
    return {stem: tuple(files[stem] for files in maps) for stem in maps[0]}


def paired_folder_samples(
    source_dir: str | Path | Sequence[str | Path],
    target_dir: str | Path | Sequence[str | Path] | None,
    label_dir: str | Path | None = None,
    source_channels: Sequence[int] | None = None,
    target_channels: Sequence[int] | None = None,
) -> list[Sample]:
    """Samples from a source folder and a target folder whose files match by stem.

    ``source_dir`` (and ``target_dir``) may be a list of folders: the files of one stem in those folders are
    stacked as the channels of one image, in the order of the folders (e.g. three focal planes as three input
    channels, or DAPI and MAP2 as two target channels).

    Raises:
        ImageReadError: a folder is missing or empty, or a file has no partner (named, with what was found).
    """
    source_folders = _folders(source_dir)
    target_folders = _folders(target_dir) if target_dir is not None else []
    sources = _stacked_by_stem(source_folders, "input")
    targets = _stacked_by_stem(target_folders, "target") if target_folders else {}
    if target_folders:
        if missing := sorted(set(sources) - set(targets)):
            raise ImageReadError(f"{target_folders[0]}: no target for source(s) {_unmatched(missing)} of "
                                 f"{source_folders[0]}; the targets found are {_unmatched(sorted(targets))}")
        if extra := sorted(set(targets) - set(sources)):
            raise ImageReadError(f"{source_folders[0]}: no source for target(s) {_unmatched(extra)} of "
                                 f"{target_folders[0]}; the sources found are {_unmatched(sorted(sources))}")
    labels = _by_stem(label_dir) if label_dir is not None else {}
    if label_dir is not None and (missing := sorted(set(sources) - set(labels))):
        raise ImageReadError(f"{label_dir}: no label image for {_unmatched(missing)}; the label images found are "
                             f"{_unmatched(sorted(labels))}")
    return [
        Sample(
            name=stem,
            source=files[0],
            extra_sources=files[1:],
            target=targets[stem][0] if stem in targets else None,
            extra_targets=targets[stem][1:] if stem in targets else (),
            labels=labels.get(stem),
            source_channels=tuple(source_channels) if source_channels is not None else None,
            target_channels=tuple(target_channels) if target_channels is not None else None,
        )
        for stem, files in sorted(sources.items())
    ]


def multichannel_samples(
    folder: str | Path,
    source_channels: Sequence[int],
    target_channels: Sequence[int] | None,
    label_dir: str | Path | None = None,
) -> list[Sample]:
    """Samples from multi-channel files, input and target being channels of the same file."""
    labels = _by_stem(label_dir) if label_dir is not None else {}
    return [
        Sample(
            name=path.stem,
            source=path,
            target=path if target_channels is not None else None,
            labels=labels.get(path.stem),
            source_channels=tuple(source_channels),
            target_channels=tuple(target_channels) if target_channels is not None else None,
        )
        for path in list_images(folder)
    ]


def split_samples(
    samples: Sequence[Sample], val_fraction: float, test_fraction: float, seed: int, mode: str = "random"
) -> dict[str, list[Sample]]:
    """Cut samples into train/val/test; each non-empty fraction gets at least one sample.

    Args:
        mode: ``random`` (shuffled with ``seed``) or ``last`` (in name order: training first, then test,
            then validation last, as Keras' ``validation_split`` does).

    Raises:
        ValueError: the fractions leave no training sample.
    """
    if mode not in {"random", "last"}:
        raise ValueError(f"data.split.mode: unknown {mode!r}; use random or last")
    n = len(samples)
    order = np.random.default_rng(seed).permutation(n) if mode == "random" else np.arange(n)[::-1]
    shuffled = [samples[i] for i in order]

    def count(fraction: float) -> int:
        return 0 if fraction <= 0 else max(1, int(round(fraction * n)))

    n_val, n_test = count(val_fraction), count(test_fraction)
    if n_val + n_test >= n:
        raise ValueError(
            f"data.split: {n} image(s) cannot give {n_val} validation and {n_test} test image(s) and still train; "
            "use data.split.mode=regions (each field cut into train/val/test regions), lower "
            "data.split.val_fraction/test_fraction, or give data.split.val / data.split.test as folders"
        )
    split = {
        "val": shuffled[:n_val],
        "test": shuffled[n_val : n_val + n_test],
        "train": shuffled[n_val + n_test :],
    }
    if mode == "last":  # back to name order within each part
        split = {k: v[::-1] for k, v in split.items()}
    return split


def field_samples(
    fields: Sequence[dict], source_channels: Sequence[int] | None = None, target_channels: Sequence[int] | None = None,
) -> list[Sample]:
    """Samples listed one by one (``data.fields``): each a dict with ``source`` (a file, or a list of files stacked
    as channels, e.g. focal planes), optional ``target`` (likewise), ``labels`` and ``name``.

    Raises:
        ImageReadError: a listed file that does not exist, or two fields with one name.
    """
    samples, names = [], set()
    for number, spec in enumerate(fields):
        if not isinstance(spec, dict) or not spec.get("source"):
            raise ImageReadError(f"data.fields[{number}]: give at least a source file ({{source: ..., target: ...}})")
        files = {}
        for key in ("source", "target", "labels"):
            value = spec.get(key)
            listed = [value] if isinstance(value, (str, Path)) else list(value or [])
            for path in map(Path, listed):
                if not path.is_file():
                    raise ImageReadError(f"{path}: data.fields[{number}].{key}: file does not exist")
            files[key] = [Path(v) for v in listed]
        name = str(spec.get("name") or files["source"][0].stem)
        if name in names:
            raise ImageReadError(f"data.fields[{number}]: two fields are named {name!r}; give each a name")
        names.add(name)
        samples.append(Sample(
            name=name, source=files["source"][0], target=files["target"][0] if files["target"] else None,
            labels=files["labels"][0] if files["labels"] else None,
            source_channels=tuple(source_channels) if source_channels is not None else None,
            target_channels=tuple(target_channels) if target_channels is not None else None,
            extra_sources=tuple(files["source"][1:]), extra_targets=tuple(files["target"][1:]),
        ))
    return samples


def labelme_samples(folder: str | Path) -> list[Sample]:
    """One sample per LabelMe JSON file in ``folder`` (image and annotation come from the JSON).

    Raises:
        ImageReadError: the folder is missing or has no JSON file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"{folder}: folder does not exist")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise ImageReadError(f"{folder}: no LabelMe .json files in this folder")
    # imagePath may not leave this folder (kept with each sample: val/test folders have their own)
    return [Sample(name=path.stem, source=path, meta={"labelme_root": str(folder)}) for path in files]


def input_samples(
    source: str | Path | Sequence[str | Path], target: str | Path | Sequence[str | Path] | None = None,
    source_channels: Sequence[int] | None = None, target_channels: Sequence[int] | None = None,
) -> list[Sample]:
    """Samples for evaluation on new data: a file or a folder of inputs, with optional targets by stem; or a list
    of folders (or of files) whose files are stacked as channels, as ``data.source_dir`` lists are in training.

    Raises:
        ImageReadError: missing input or target, or an unsupported file.
    """
    if not isinstance(source, (str, Path)):
        paths = [Path(p) for p in source]
        if all(p.is_dir() for p in paths):
            return paired_folder_samples(paths, target, None, source_channels, target_channels)
        for path in paths:
            if not path.is_file():
                raise ImageReadError(f"{path}: input file or folder does not exist")
        targets = [Path(t) for t in ([target] if isinstance(target, (str, Path)) else target or [])]
        return [Sample(paths[0].stem, paths[0], targets[0] if targets else None, None,
                       tuple(source_channels) if source_channels is not None else None,
                       tuple(target_channels) if target_channels is not None else None,
                       extra_sources=tuple(paths[1:]), extra_targets=tuple(targets[1:]))]
    source, target = Path(source), Path(target) if target else None
    if source.is_dir():
        return paired_folder_samples(source, target, None, source_channels, target_channels)
    if not source.is_file():
        raise ImageReadError(f"{source}: input file or folder does not exist")
    if source.suffix.lower() not in IMAGE_SUFFIXES:
        raise ImageReadError(f"{source}: unsupported format {source.suffix!r}")
    if target is not None and not target.is_file():
        raise ImageReadError(f"{target}: target file does not exist")
    return [Sample(source.stem, source, target, None,
                   tuple(source_channels) if source_channels is not None else None,
                   tuple(target_channels) if target_channels is not None else None)]


# -- spatial splits: regions of large fields ----------------------------------------------------------------


def sample_size(sample: Sample, channel_axis: int | str = "auto") -> tuple[int, int]:
    """(height, width) of the part of the field a sample uses, from headers (nothing decoded)."""
    if sample.region is not None:
        return sample.region[2], sample.region[3]
    if sample.source.suffix.lower() == ".json":
        document = json.loads(sample.source.read_text())
        return int(document["imageHeight"]), int(document["imageWidth"])
    _, height, width = images_info(sample.source_files, sample.source_channels, channel_axis)[0]
    return height, width


def _sub(sample: Sample, suffix: str, region: Region) -> Sample:
    """The sample restricted to ``region`` (relative to its current region), named ``<name>_<suffix>``."""
    top, left = (sample.region[0], sample.region[1]) if sample.region else (0, 0)
    absolute = (top + region[0], left + region[1], region[2], region[3])
    return dataclasses.replace(sample, name=f"{sample.name}_{suffix}", region=absolute)


def _cut_end(rect: Region, area: float, minimum: int, gap: int) -> tuple[Region, Region]:
    """Cut a strip of about ``area`` pixels (at least ``minimum`` thick) off the end of the longer axis of
    ``rect``; returns (strip, rest), the rest shortened by ``gap`` so that the two never touch."""
    top, left, height, width = rect
    if height > width:  # strip of rows at the bottom
        size = max(minimum, math.ceil(area / width))
        return (top + height - size, left, size, width), (top, left, height - size - gap, width)
    size = max(minimum, math.ceil(area / height))
    return (top, left + width - size, height, size), (top, left, height, width - size - gap)


def region_split(
    samples: Sequence[Sample], sizes: Sequence[tuple[int, int]], val_fraction: float, test_fraction: float,
    patch_size: int, gap: int | None = None,
) -> dict[str, list[Sample]]:
    """Split every field into a training, a validation and a test region (``data.split.mode=regions``).

    The test strip is cut off the end of the field's longer axis, then the validation strip off the end of the
    longer axis of what is left; each holds about its fraction of the field's pixels and is at least one patch
    thick. A gap of ``gap`` pixels (default half a patch) separates each strip from the training region, so no
    training crop comes near a pixel of another split.

    Raises:
        ValueError: a field too small for the strips, the gaps and one training patch (the error names it).
    """
    gap = patch_size // 2 if gap is None else gap
    out: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for sample, (height, width) in zip(samples, sizes):
        rest: Region = (0, 0, height, width)
        for stage, fraction in (("test", test_fraction), ("val", val_fraction)):
            if fraction > 0:
                strip, rest = _cut_end(rest, fraction * height * width, patch_size, gap)
                out[stage].append(_sub(sample, stage, strip))
        if min(rest[2], rest[3]) < patch_size:
            raise ValueError(
                f"data.split.mode=regions: {sample.source.name} ({height}x{width}) leaves a training region of "
                f"{max(rest[2], 0)}x{max(rest[3], 0)} pixels after the validation/test strips and gaps of {gap} px, "
                f"smaller than data.patch_size={patch_size}; lower data.split.val_fraction/test_fraction, "
                "data.split.gap or data.patch_size"
            )
        out["train"].append(_sub(sample, "train", rest))
    return out


def region_folds(sample: Sample, size: tuple[int, int], folds: int, fold: int, patch_size: int, gap: int | None = None
                 ) -> dict[str, list[Sample]]:
    """Fold ``fold`` of ``folds`` over one field: equal strips along its longer axis, strip ``fold`` validates,
    the strips before and after it train (each kept apart from it by ``gap`` pixels).

    Raises:
        ValueError: strips thinner than a patch, or no training piece left.
    """
    gap = patch_size // 2 if gap is None else gap
    height, width = size
    along_rows = height > width
    length = height if along_rows else width
    edges = np.linspace(0, length, folds + 1).round().astype(int)
    start, stop = int(edges[fold]), int(edges[fold + 1])
    if stop - start < patch_size:
        raise ValueError(
            f"cv.folds={folds}: {sample.source.name} ({height}x{width}) gives strips of {stop - start} px, thinner "
            f"than data.patch_size={patch_size}; lower cv.folds or data.patch_size"
        )

    def rect(a: int, b: int) -> Region:
        return (a, 0, b - a, width) if along_rows else (0, a, height, b - a)

    train = [(name, rect(a, b)) for name, (a, b) in (("train_a", (0, start - gap)), ("train_b", (stop + gap, length)))
             if b - a >= patch_size]
    if not train:
        raise ValueError(f"cv.folds={folds}, cv.fold={fold}: {sample.source.name} leaves no training strip of at "
                         f"least data.patch_size={patch_size} px beside the validation strip; lower cv.folds")
    return {"train": [_sub(sample, name, r) for name, r in train], "val": [_sub(sample, f"fold{fold}", rect(start, stop))]}


def image_folds(samples: Sequence[Sample], folds: int, fold: int, seed: int) -> dict[str, list[Sample]]:
    """Fold ``fold`` of ``folds`` over whole images (seeded shuffle, near-equal folds): that fold validates.

    Raises:
        ValueError: fewer images than folds.
    """
    if len(samples) < folds:
        raise ValueError(
            f"cv.folds={folds}: only {len(samples)} image(s) outside the test split; lower cv.folds, or use "
            "data.split.mode=regions to cross-validate over regions of the images"
        )
    order = np.random.default_rng(seed).permutation(len(samples))
    parts = np.array_split(order, folds)
    val = set(parts[fold].tolist())
    return {"train": [samples[i] for i in sorted(set(range(len(samples))) - val)], "val": [samples[i] for i in sorted(val)]}
