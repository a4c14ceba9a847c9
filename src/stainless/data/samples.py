"""Finding samples on disk: paired folders, multi-channel files, and deterministic splits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stainless.io import IMAGE_SUFFIXES, ImageReadError, list_images


@dataclass(frozen=True)
class Sample:
    """One field of view: where its input, target and (optional) instance labels are.

    ``source`` and ``target`` may be the same multi-channel file, read with different channels.
    """

    name: str
    source: Path
    target: Path | None = None
    labels: Path | None = None
    source_channels: tuple[int, ...] | None = None
    target_channels: tuple[int, ...] | None = None
    meta: dict = field(default_factory=dict, compare=False)


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


def paired_folder_samples(
    source_dir: str | Path,
    target_dir: str | Path | None,
    label_dir: str | Path | None = None,
    source_channels: Sequence[int] | None = None,
    target_channels: Sequence[int] | None = None,
) -> list[Sample]:
    """Samples from a source folder and a target folder whose files match by stem.

    Raises:
        ImageReadError: a folder is missing or empty, or a file has no partner (all are named).
    """
    sources = _by_stem(source_dir)
    targets = _by_stem(target_dir) if target_dir is not None else {}
    if target_dir is not None:
        if missing := sorted(set(sources) - set(targets)):
            raise ImageReadError(f"{target_dir}: no target for source(s) {_unmatched(missing)} of {source_dir}")
        if extra := sorted(set(targets) - set(sources)):
            raise ImageReadError(f"{source_dir}: no source for target(s) {_unmatched(extra)} of {target_dir}")
    labels = _by_stem(label_dir) if label_dir is not None else {}
    if label_dir is not None and (missing := sorted(set(sources) - set(labels))):
        raise ImageReadError(f"{label_dir}: no label image for {_unmatched(missing)}")
    return [
        Sample(
            name=stem,
            source=path,
            target=targets.get(stem),
            labels=labels.get(stem),
            source_channels=tuple(source_channels) if source_channels is not None else None,
            target_channels=tuple(target_channels) if target_channels is not None else None,
        )
        for stem, path in sorted(sources.items())
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
            f"split: {n} sample(s) cannot give {n_val} validation and {n_test} test sample(s) and still train"
        )
    split = {
        "val": shuffled[:n_val],
        "test": shuffled[n_val : n_val + n_test],
        "train": shuffled[n_val + n_test :],
    }
    if mode == "last":  # back to name order within each part
        split = {k: v[::-1] for k, v in split.items()}
    return split


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
    source: str | Path, target: str | Path | None = None,
    source_channels: Sequence[int] | None = None, target_channels: Sequence[int] | None = None,
) -> list[Sample]:
    """Samples for evaluation on new data: a file or a folder of inputs, with optional targets by stem.

    Raises:
        ImageReadError: missing input or target, or an unsupported file.
    """
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
