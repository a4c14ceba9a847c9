"""What is measured of each cell in a frame, in pixels and in µm beside them, and the pixel size of a video."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stainless.io import IMAGE_SUFFIXES


def measure(labels: np.ndarray, pixel_size: float | None) -> list[dict[str, float | None]]:
    """Area, perimeter, equivalent diameter and circularity of each instance, in pixels and, beside them, in µm
    (``area_um2``, ``perimeter_um``, ``equivalent_diameter_um``: None when the pixel size is unknown).

    The values are scikit-image's ``regionprops`` ones to the last bit (``area``, ``centroid``, ``perimeter`` with
    4-connectivity, ``equivalent_diameter_area``), computed for all cells at once: regionprops crops and measures
    each cell in turn (3.5 ms for a 256 x 256 frame of 30 cells, against 1.5 ms here).
    """
    labels = np.asarray(labels)
    ids, index = _object_index(labels)
    if not len(ids):
        return []
    inside = index >= 0
    flat = index[inside]
    area = np.bincount(flat, minlength=len(ids)).astype(np.float64)
    rows_, cols = np.nonzero(inside)
    cy = np.bincount(flat, weights=rows_.astype(np.float64), minlength=len(ids)) / area
    cx = np.bincount(flat, weights=cols.astype(np.float64), minlength=len(ids)) / area
    perimeters = _perimeters(index, len(ids))
    out = []
    for i, label in enumerate(ids):
        perimeter = float(perimeters[i])
        row = {
            "label": int(label), "y": float(cy[i]), "x": float(cx[i]), "area": float(area[i]), "perimeter": perimeter,
            "equivalent_diameter": float((2 * 2 * area[i] / np.pi) ** (1 / 2)),
            "circularity": float(4 * np.pi * area[i] / perimeter**2) if perimeter > 0 else 0.0,
        }
        row.update(in_um(row, pixel_size))
        out.append(row)
    return out


def _object_index(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the object ids in ascending order, each pixel's position in them: 0..n-1, -1 for the background)."""
    if labels.size and labels.dtype.kind in "iu" and labels.min() >= 0 and labels.max() < 2**24:
        counts = np.bincount(labels.ravel())  # a lookup table: cheaper than the sort inside np.unique
        ids = np.flatnonzero(counts[1:]) + 1
        lut = np.full(len(counts), -1, np.int32)  # int32: the perimeter's shifted comparisons move half the bytes
        lut[ids] = np.arange(len(ids))
        return ids, lut[labels]
    ids, index = np.unique(labels, return_inverse=True)
    index = index.reshape(labels.shape)
    return (ids[1:], index - 1) if len(ids) and ids[0] == 0 else (ids, index)


# scikit-image's perimeter estimate (skimage.measure.perimeter, Benkrid & Crookes): each border pixel is weighted by
# the pattern of border pixels of the same object around it, coded as 1 (itself) + 2 per 4-neighbour + 10 per
# diagonal one.
_PERIMETER_WEIGHTS = np.zeros(50, np.float64)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1
_PERIMETER_WEIGHTS[[21, 33]] = np.sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + np.sqrt(2)) / 2
_NEIGHBOURS = ((-1, 0, 2), (1, 0, 2), (0, -1, 2), (0, 1, 2), (-1, -1, 10), (-1, 1, 10), (1, -1, 10), (1, 1, 10))


def _perimeters(index: np.ndarray, n: int) -> np.ndarray:
    """The perimeter of each of the ``n`` objects (``index`` 0..n-1, -1 background), as ``regionprops`` gives it:
    scikit-image's estimate on each object alone, here for all of them in one pass (no library does that)."""
    h, w = index.shape
    padded = np.pad(index, 1, constant_values=-1)
    shifted = lambda a, dy, dx: a[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]  # noqa: E731
    # a border pixel has a 4-neighbour outside its object (another object, the background, or beyond the image)
    border = (index >= 0) & np.logical_or.reduce([shifted(padded, dy, dx) != index for dy, dx, _ in _NEIGHBOURS[:4]])
    border_padded = np.pad(border, 1)
    code = border.astype(np.uint8)
    for dy, dx, weight in _NEIGHBOURS:
        same = shifted(border_padded, dy, dx) & (shifted(padded, dy, dx) == index)
        code += np.uint8(weight) * (same & border)
    histogram = np.bincount(index[border] * 50 + code[border], minlength=n * 50).reshape(n, 50)
    # one dot product per object, as scikit-image sums its histogram (the same float sums, in the same order)
    return np.array([row @ _PERIMETER_WEIGHTS for row in histogram])


def in_um(row: dict[str, Any], pixel_size: float | None) -> dict[str, float | None]:
    """The ``*_um`` / ``*_um2`` twins of a row's pixel sizes (area, perimeter, equivalent diameter, a0)."""
    out: dict[str, float | None] = {}
    for name, power in (("area", 2), ("perimeter", 1), ("equivalent_diameter", 1), ("a0", 2)):
        if name in row:
            value = row[name]
            out[f"{name}_um{2 if power == 2 else ''}"] = (
                float(value) * pixel_size**power if pixel_size and value is not None else None)
    return out


def video_pixel_size(path: str | Path) -> float | None:
    """µm per pixel recorded in a video's files: an OME / ImageJ TIFF stack, or the frames of a folder (which must
    agree); None for mp4/avi and files without a physical size.

    Raises:
        ImageReadError: an unknown unit, or frames of one folder with different pixel sizes.
    """
    from stainless.io import common_pixel_size, pixel_size

    path = Path(path)
    if path.is_dir():
        return common_pixel_size(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                                 f"the frames of {path}")
    return pixel_size(path) if path.is_file() else None
