"""What an instance head learns: a map drawn from the instance annotations that separates touching objects.

``boundary``: 1 on the rim of every object (its pixels next to another object or the background), 0 elsewhere;
touching objects are parted by a two-pixel line. ``distance``: each object's distance to its own edge divided by
that object's largest distance (1 at its centre, falling to 0 at its rim), 0 on the background; touching objects
become separate hills. Both are decoded by a seeded watershed (``stainless.metrics.objects.decode_instances``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label
from skimage.segmentation import find_boundaries

INSTANCE_MODES = ("none", "boundary", "distance")


def check_mode(mode: str) -> str:
    if mode not in INSTANCE_MODES:
        raise ValueError(f"model.instances={mode!r}: use one of {', '.join(INSTANCE_MODES)}")
    return mode


def objects_of(labels: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    """The annotated objects: instance labels where there are any, else the connected components of the mask
    (never split further: the truth is what was drawn)."""
    return np.asarray(labels) if labels is not None else label(np.asarray(mask) > 0, connectivity=1)


def instance_target(objects: np.ndarray, mode: str) -> np.ndarray:
    """The ``mode`` map (float32, H x W, values in [0, 1]) of an instance label image (0 background)."""
    objects = np.asarray(objects)
    if check_mode(mode) == "none":
        raise ValueError("instance_target: model.instances=none has no instance map")
    rim = find_boundaries(objects, mode="inner")  # pixels of an object next to anything else (never background)
    if mode == "boundary":
        return rim.astype(np.float32)
    # distance to the rim inside each object: the rim pixels are set to background, so touching objects do not
    # see each other as inside; +1 puts the rim at distance 1 rather than 0
    distance = ndi.distance_transform_edt((objects > 0) & ~rim) + (objects > 0)
    ids = np.unique(objects[objects > 0])
    if not len(ids):
        return np.zeros(objects.shape, np.float32)
    peak = np.zeros(int(ids.max()) + 1)
    peak[ids] = ndi.maximum(distance, objects, ids)
    return np.where(objects > 0, distance / np.maximum(peak[objects], 1), 0).astype(np.float32)


def object_diameters(labels: np.ndarray) -> np.ndarray:
    """Equivalent-disk diameter, sqrt(4 area / pi), of every labelled object (pixels)."""
    areas = np.bincount(np.asarray(labels, np.int64).ravel())[1:]
    return np.sqrt(4 * areas[areas > 0] / np.pi)


def scale_summary(diameters: np.ndarray) -> dict | None:
    """Median and 5-95% range of object diameters, and how many objects they come from (None without objects)."""
    if not len(diameters):
        return None
    p5, median, p95 = np.percentile(diameters, [5, 50, 95])
    return {"diameter_median": float(median), "diameter_p5": float(p5), "diameter_p95": float(p95),
            "n_objects": int(len(diameters))}
