"""Deterministic synthetic brightfield red blood cells: annotated frames and shrinking-cell videos.

Cells are biconcave discs seen in brightfield: a dark rim, a lighter centre, on a noisy, unevenly lit
background. Written under ``root``::

    images/frame_000.png   8-bit frames
    masks/frame_000.png    binary masks (0/255)
    labels/frame_000.tif   instance labels (uint16)
    labelme/frame_000.json + frame_000.png   LabelMe polygons for the first ``n_labelme`` frames
    videos/<CONDITION>.tif multi-page 8-bit videos, one per condition, cells shrinking over time
    videos/truth.csv       condition, cell, frame, time_s, area_px (the true areas)
    videos/conditions.csv  condition, tau_s, final_fraction (the true kinetics)
    dataset.json           the parameters (its presence marks a complete dataset)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
from scipy import ndimage as ndi

from stainless.data.synthetic import write_dataset
from stainless.io import write_ctc

# Osmotic shrinking kinetics of the synthetic conditions: time constant (s) and final area fraction.
CONDITIONS = {"UREA": (12.0, 0.62), "NaCl": (25.0, 0.72), "sucrose": (45.0, 0.80)}


def _place_cells(rng: np.random.Generator, size: int, n_cells: int, radius: tuple[float, float]) -> list[dict]:
    """Non-overlapping cells (centre, radii, angle), by rejection sampling."""
    cells: list[dict] = []
    for _ in range(n_cells * 50):
        if len(cells) == n_cells:
            break
        r = rng.uniform(*radius)
        cy, cx = rng.uniform(r + 2, size - r - 2, 2)
        if all(np.hypot(cy - c["cy"], cx - c["cx"]) > r + c["r"] + 4 for c in cells):
            cells.append({"cy": cy, "cx": cx, "r": r, "aspect": rng.uniform(0.85, 1.0), "angle": rng.uniform(0, np.pi)})
    return cells


def _render(rng: np.random.Generator, size: int, cells: list[dict], scale: np.ndarray | None = None):
    """One brightfield frame (uint8) and its instance labels; ``scale`` shrinks each cell's radius."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    image = np.full((size, size), 0.62)
    labels = np.zeros((size, size), np.uint16)
    for i, cell in enumerate(cells):
        r = cell["r"] * (1.0 if scale is None else scale[i])
        cos, sin = np.cos(cell["angle"]), np.sin(cell["angle"])
        dy, dx = yy - cell["cy"], xx - cell["cx"]
        u, v = dx * cos + dy * sin, (-dx * sin + dy * cos) / cell["aspect"]
        rho = np.hypot(u, v) / r  # 1 at the cell edge
        inside = rho <= 1.0
        labels[inside] = i + 1
        rim = np.exp(-(((rho - 0.82) / 0.16) ** 2))  # dark ring
        centre = np.exp(-((rho / 0.45) ** 2))  # the lighter dimple
        image += np.where(rho <= 1.15, -0.38 * rim + 0.10 * centre * inside - 0.06 * inside, 0.0)
    image = ndi.gaussian_filter(image, 1.0)
    angle = rng.uniform(0, 2 * np.pi)
    image *= 0.85 + 0.15 * (np.cos(angle) * xx + np.sin(angle) * yy) / (size * 1.5) + 0.1
    image += rng.normal(0, 0.03, image.shape)
    return np.clip(image * 255, 0, 255).astype(np.uint8), labels


def _polygon(labels: np.ndarray, cell_id: int) -> list[list[float]]:
    from skimage.measure import approximate_polygon, find_contours

    contour = max(find_contours((labels == cell_id).astype(float), 0.5), key=len)
    contour = approximate_polygon(contour, tolerance=0.5)
    return [[float(x), float(y)] for y, x in contour[:-1]]


def _labelme(labels: np.ndarray, image_name: str) -> dict:
    shapes = [
        {"label": "rbc", "points": _polygon(labels, int(i)), "group_id": None, "shape_type": "polygon", "flags": {}}
        for i in np.unique(labels)
        if i
    ]
    return {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_name, "imageData": None,
            "imageHeight": int(labels.shape[0]), "imageWidth": int(labels.shape[1])}


def generate_rbc_dataset(
    root: str | Path,
    n_frames: int = 40,
    n_labelme: int = 30,
    size: int = 256,
    cells_per_frame: int = 14,
    radius: tuple[float, float] = (11.0, 16.0),
    video_frames: int = 80,
    frame_interval: float = 1.0,
    video_cells: int = 12,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write the synthetic RBC dataset to ``root`` atomically (all files or none).

    Returns:
        the dataset folder. An existing folder with the same parameters is reused.

    Raises:
        FileExistsError: ``root`` holds something else.
    """
    params = {"kind": "rbc", "n_frames": n_frames, "n_labelme": n_labelme, "size": size,
              "cells_per_frame": cells_per_frame, "radius": list(radius), "video_frames": video_frames,
              "frame_interval": frame_interval, "video_cells": video_cells, "seed": seed,
              "generator": 2}  # 2: videos come with a Cell Tracking Challenge ground truth

    def write(tmp: Path) -> None:
        for sub in ("images", "masks", "labels", "labelme", "videos"):
            (tmp / sub).mkdir()
        for index in range(n_frames):
            rng = np.random.default_rng([seed, index])
            image, labels = _render(rng, size, _place_cells(rng, size, cells_per_frame, radius))
            name = f"frame_{index:03d}"
            iio.imwrite(tmp / "images" / f"{name}.png", image)
            iio.imwrite(tmp / "masks" / f"{name}.png", ((labels > 0) * 255).astype(np.uint8))
            tifffile.imwrite(tmp / "labels" / f"{name}.tif", labels)
            if index < n_labelme:
                iio.imwrite(tmp / "labelme" / f"{name}.png", image)
                (tmp / "labelme" / f"{name}.json").write_text(json.dumps(_labelme(labels, f"{name}.png"), indent=1))
        _write_videos(tmp / "videos", size, video_frames, frame_interval, video_cells, radius, seed)

    return write_dataset(root, params, write, overwrite)


def shrink_curve(t: np.ndarray, tau: float, final_fraction: float) -> np.ndarray:
    """Area fraction over time: exponential approach to a plateau, 1 at t=0."""
    return final_fraction + (1 - final_fraction) * np.exp(-np.asarray(t) / tau)


def _write_videos(folder: Path, size: int, n_frames: int, interval: float, n_cells: int, radius, seed: int) -> None:
    with open(folder / "conditions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["condition", "tau_s", "final_fraction"])
        writer.writerows([name, tau, fraction] for name, (tau, fraction) in CONDITIONS.items())
    truth_rows = []
    for c_index, (condition, (tau, fraction)) in enumerate(CONDITIONS.items()):
        rng = np.random.default_rng([seed, 1000 + c_index])
        cells = _place_cells(rng, size, n_cells, radius)
        frames, stack = [], []
        for frame in range(n_frames):
            t = frame * interval
            area_scale = shrink_curve(t, tau, fraction)
            for cell in cells:  # a slow random drift
                cell["cy"] = float(np.clip(cell["cy"] + rng.normal(0, 0.2), cell["r"] + 2, size - cell["r"] - 2))
                cell["cx"] = float(np.clip(cell["cx"] + rng.normal(0, 0.2), cell["r"] + 2, size - cell["r"] - 2))
            image, labels = _render(rng, size, cells, np.full(len(cells), np.sqrt(area_scale)))
            frames.append(image)
            stack.append(labels)
            areas = np.bincount(labels.ravel(), minlength=len(cells) + 1)
            truth_rows += [[condition, i + 1, frame, t, int(areas[i + 1])] for i in range(len(cells))]
        tifffile.imwrite(folder / f"{condition}.tif", np.stack(frames), metadata={"axes": "TYX"})
        # the Cell Tracking Challenge ground truth of this video (evaluate.py tracking_gt=...): every cell one track
        write_ctc(folder / f"{condition}_GT" / "TRA", np.stack(stack), None, "man_track", "man_track.txt")
        (folder / f"{condition}_GT" / "SEG").mkdir()
        for t, labels in enumerate(stack):
            digits = max(3, len(str(n_frames - 1)))
            tifffile.imwrite(folder / f"{condition}_GT" / "SEG" / f"man_seg{t:0{digits}d}.tif", labels.astype(np.uint16))
    with open(folder / "truth.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["condition", "cell", "frame", "time_s", "area_px"])
        writer.writerows(truth_rows)
