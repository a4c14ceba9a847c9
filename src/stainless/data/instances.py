"""What an instance head learns: a map drawn from the instance annotations that separates touching objects.

``boundary``: 1 on the rim of every object (its pixels next to another object or the background), 0 elsewhere;
touching objects are parted by a two-pixel line. ``distance``: each object's distance to its own edge divided by
that object's largest distance (1 at its centre, falling to 0 at its rim), 0 on the background; touching objects
become separate hills. Both are decoded by a seeded watershed (``stainless.metrics.objects.decode_instances``).

``contact_weight``: a per-pixel weight of the head's loss that is high where two annotated objects touch or nearly
touch (the U-Net paper's border weight, Ronneberger et al. 2015): the few pixels that decide whether two cells come
out as one are otherwise outnumbered by the easy insides and background.
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


def contact_weight(objects: np.ndarray, weight: float, sigma: float, reach: int = 2) -> np.ndarray:
    """1 + ``weight`` x exp(-d^2 / (2 ``sigma``^2)), d the distance to the nearest pixel that has two different objects
    within ``reach`` pixels (a contact line, or a gap of up to 2 ``reach`` - 1 background pixels between objects);
    1 everywhere on a field without such pixels (float32, H x W).

    Written here: no library we use has it. The U-Net paper weighs by the distances to the nearest two objects, an EDT
    per object; one EDT to the contact pixels costs the same on every crop, however many cells it holds."""
    objects = np.asarray(objects)
    if weight < 0 or sigma <= 0:
        raise ValueError(f"contact weight {weight} and sigma {sigma}: the weight must be >= 0 and sigma > 0")
    size = 2 * reach + 1
    above = int(objects.max()) + 1  # stands in for the background, above every label
    highest = ndi.maximum_filter(objects, size=size)  # the largest label near each pixel ...
    lowest = ndi.minimum_filter(np.where(objects > 0, objects, above), size=size)  # ... and the smallest but background
    near_two = (lowest < above) & (highest != lowest)
    if weight == 0 or not near_two.any():
        return np.ones(objects.shape, np.float32)
    distance = ndi.distance_transform_edt(~near_two)
    return (1 + weight * np.exp(-(distance**2) / (2 * sigma**2))).astype(np.float32)


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
