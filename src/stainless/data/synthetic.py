"""Deterministic synthetic membrane/nuclei tissue, written as ordinary 16-bit TIFF files.

Each image is a field of packed cells (a jittered-grid Voronoi tessellation). The membrane channel is bright
at the cell borders, with the nucleus faintly darker inside each cell; the nuclei channel holds one ellipse per
cell. Both are blurred by a Gaussian PSF, shaded by uneven illumination and corrupted by Poisson-Gaussian
noise, then stored as uint16. Nuclei and cell instance labels are written alongside.

Layout written under ``root``::

    membrane/img_000.tif   source (uint16)
    nuclei/img_000.tif     target (uint16)
    labels/img_000.tif     nuclei instance labels (uint16, 0 = background)
    cells/img_000.tif      cell instance labels (uint16)
    dataset.json           the generator's parameters (its presence marks a complete dataset)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from lightning.pytorch.utilities import rank_zero_info
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage.draw import ellipse
from skimage.segmentation import find_boundaries

from stainless.io import write_tiff

MANIFEST = "dataset.json"


def _voronoi_cells(rng: np.random.Generator, size: int, cell_size: float) -> np.ndarray:
    """Instance labels (1..N) of a jittered-grid Voronoi tessellation covering a size x size field."""
    n = max(2, int(round(size / cell_size)))
    step = size / n
    grid = (np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2) + 0.5) * step
    seeds = grid + rng.uniform(-0.35, 0.35, grid.shape) * step
    yy, xx = np.mgrid[0:size, 0:size]
    _, nearest = cKDTree(seeds).query(np.stack([yy.ravel(), xx.ravel()], -1))
    return (nearest.reshape(size, size) + 1).astype(np.int32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (field.std() + 1e-8)


def _camera(rng: np.random.Generator, clean: np.ndarray, illumination: np.ndarray, photons: float) -> np.ndarray:
    """Blur, shade and add Poisson-Gaussian noise to an image in [0, 1]; return uint16 counts."""
    blurred = ndi.gaussian_filter(clean, 1.5)
    expected = np.clip(blurred * illumination, 0, None) * photons
    counts = rng.poisson(expected).astype(np.float64) + rng.normal(0.0, 1.5, clean.shape)
    gain, offset = 20.0, 400.0  # ADU per photon and camera offset, like a 12-bit-range sCMOS in 16 bits
    return np.clip(counts * gain + offset, 0, 65535).astype(np.uint16)


def synthesize_tissue(
    seed: int, index: int, size: int = 256, cell_size: float = 32.0, photons: float = 60.0
) -> dict[str, np.ndarray]:
    """One synthetic field of view, deterministic in (seed, index).

    Returns:
        dict with ``membrane`` and ``nuclei`` (uint16 images), ``labels`` (nuclei instances) and ``cells``
        (cell instances), each (size, size).
    """
    rng = np.random.default_rng([seed, index])
    cells = _voronoi_cells(rng, size, cell_size)
    borders = find_boundaries(cells, mode="thick")
    inside = ndi.distance_transform_edt(~borders)

    nuclei_labels = np.zeros((size, size), np.uint16)
    nuclei = np.zeros((size, size))
    for cell_id, region in enumerate(ndi.find_objects(cells), start=1):
        if region is None:
            continue
        mask = cells[region] == cell_id
        depth = np.where(mask, inside[region], 0)
        # Centre the nucleus at the cell's deepest point, sized to fit well inside the cell.
        cy, cx = np.unravel_index(np.argmax(depth), depth.shape)
        radius = depth[cy, cx]
        if radius < 4:
            continue
        r_major = radius * rng.uniform(0.55, 0.75)
        r_minor = r_major * rng.uniform(0.65, 0.95)
        rr, cc = ellipse(
            cy + region[0].start, cx + region[1].start, r_minor, r_major,
            shape=(size, size), rotation=rng.uniform(0, np.pi),
        )
        keep = cells[rr, cc] == cell_id
        rr, cc = rr[keep], cc[keep]
        nuclei_labels[rr, cc] = cell_id
        nuclei[rr, cc] = rng.uniform(0.55, 1.0)

    texture = 1.0 + 0.15 * _smooth_noise(rng, (size, size), 2.0)
    nuclei_clean = np.clip(nuclei * texture, 0, None)
    membrane_clean = 0.22 + 0.78 * borders + 0.05 * _smooth_noise(rng, (size, size), 3.0)
    membrane_clean -= 0.09 * (nuclei_labels > 0)  # the nucleus shows faintly darker in the membrane image
    membrane_clean = np.clip(membrane_clean, 0, None)

    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    illumination = 0.75 + 0.25 * (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5) + 0.5)
    return {
        "membrane": _camera(rng, membrane_clean, illumination, photons),
        "nuclei": _camera(rng, nuclei_clean, illumination, photons),
        "labels": nuclei_labels,
        "cells": cells.astype(np.uint16),
    }


def generate_nuclei_dataset(
    root: str | Path,
    n_images: int = 24,
    size: int = 256,
    seed: int = 0,
    cell_size: float = 32.0,
    photons: float = 60.0,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic membrane/nuclei dataset to ``root`` (atomically: all files or none).

    Args:
        root: destination folder; left untouched when it already holds a complete dataset with the same
            parameters, unless ``overwrite``.
        n_images, size, seed, cell_size, photons: generator parameters (``photons`` sets the noise level).

    Returns:
        the dataset folder.

    Raises:
        FileExistsError: ``root`` holds other files and ``overwrite`` is False.
    """
    params = {"kind": "synthetic_nuclei", "n_images": n_images, "size": size, "seed": seed,
              "cell_size": cell_size, "photons": photons}

    def write(tmp: Path) -> None:
        for index in range(n_images):
            for kind, image in synthesize_tissue(seed, index, size, cell_size, photons).items():
                write_tiff(tmp / kind / f"img_{index:03d}.tif", image)

    return write_dataset(root, params, write, overwrite)


def write_dataset(root: str | Path, params: dict, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Create a generated dataset atomically: ``write`` fills a temporary folder that is then renamed to ``root``.

    ``root/dataset.json`` records ``params``; a folder with the same record is reused as it is.

    Raises:
        FileExistsError: ``root`` holds another dataset or other files, and ``overwrite`` is False.
    """
    root = Path(root)
    manifest = root / MANIFEST
    if manifest.is_file() and not overwrite:
        existing = json.loads(manifest.read_text())
        if existing == params:
            return root
        if {k: v for k, v in existing.items() if k != "generator"} == {k: v for k, v in params.items() if k != "generator"}:
            # the same dataset from an older generator (it lacks files the code now expects): made again, it is ours
            rank_zero_info(f"{root}: made by an older generator ({existing.get('generator', 1)} < "
                           f"{params.get('generator', 1)}); writing it again")
            return write_dataset(root, params, write, overwrite=True)
        raise FileExistsError(
            f"{root}: holds a synthetic dataset made with other parameters ({existing}); choose another folder"
        )
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(f"{root}: folder exists and is not a synthetic dataset; choose another folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write(tmp)
        (tmp / MANIFEST).write_text(json.dumps(params, indent=2))
        if root.exists() and overwrite:
            shutil.rmtree(root)
        try:
            os.replace(tmp, root)
        except OSError:
            # Another process (e.g. another DDP rank) finished the same dataset first: use theirs.
            if not (manifest.is_file() and json.loads(manifest.read_text()) == params):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
