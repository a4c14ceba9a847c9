"""What is measured of each cell in a frame, in pixels and in µm beside them, and the pixel size of a video."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from skimage.measure import regionprops

from stainless.io import IMAGE_SUFFIXES


def measure(labels: np.ndarray, pixel_size: float | None) -> list[dict[str, float | None]]:
    """Area, perimeter, equivalent diameter and circularity of each instance, in pixels and, beside them, in µm
    (``area_um2``, ``perimeter_um``, ``equivalent_diameter_um``: None when the pixel size is unknown)."""
    rows = []
    for region in regionprops(labels):
        perimeter = region.perimeter
        row = {
            "label": int(region.label),
            "y": float(region.centroid[0]), "x": float(region.centroid[1]),
            "area": float(region.area), "perimeter": float(perimeter),
            "equivalent_diameter": float(region.equivalent_diameter_area),
            "circularity": float(4 * np.pi * region.area / perimeter**2) if perimeter > 0 else 0.0,
        }
        row.update(in_um(row, pixel_size))
        rows.append(row)
    return rows


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
