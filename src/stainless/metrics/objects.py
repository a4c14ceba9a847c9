"""Object-level scores: split masks into instances, match predicted to true objects one-to-one by IoU."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from skimage.feature import peak_local_max
from skimage.morphology import remove_small_objects
from skimage.segmentation import watershed

IOU_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def instances_from_mask(mask: np.ndarray, min_size: int = 20, min_distance: int = 5) -> np.ndarray:
    """Instance labels from a binary mask; touching objects split by a distance-transform watershed.

    Args:
        mask: boolean (H, W) foreground.
        min_size: objects smaller than this (pixels) are dropped.
        min_distance: minimum distance between object centres (pixels); about a cell radius.
    """
    mask = remove_small_objects(np.asarray(mask, bool), max_size=min_size - 1) if min_size > 1 else np.asarray(mask, bool)
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    distance = ndi.distance_transform_edt(mask)
    components, _ = ndi.label(mask)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-distance, markers, mask=mask)
    # components without a peak (tiny or flat) keep their own label
    missing = np.unique(components[(labels == 0) & mask])
    for offset, comp in enumerate(missing[missing > 0], start=labels.max() + 1):
        labels[components == comp] = offset
    return labels.astype(np.int32)


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU between every true and predicted instance: (matrix T x P, true ids, predicted ids)."""
    true_ids = np.unique(true[true > 0])
    pred_ids = np.unique(pred[pred > 0])
    if not len(true_ids) or not len(pred_ids):
        return np.zeros((len(true_ids), len(pred_ids))), true_ids, pred_ids
    t_index = np.searchsorted(true_ids, true.ravel())
    p_index = np.searchsorted(pred_ids, pred.ravel())
    both = (true.ravel() > 0) & (pred.ravel() > 0)
    intersection = np.zeros((len(true_ids), len(pred_ids)))
    np.add.at(intersection, (t_index[both], p_index[both]), 1)
    t_area = np.bincount(t_index[true.ravel() > 0], minlength=len(true_ids))
    p_area = np.bincount(p_index[pred.ravel() > 0], minlength=len(pred_ids))
    union = t_area[:, None] + p_area[None, :] - intersection
    return intersection / np.maximum(union, 1), true_ids, pred_ids


def match_objects(true: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = IOU_THRESHOLDS) -> dict:
    """Optimal one-to-one matching (Hungarian, maximising IoU), scored at each IoU threshold.

    Returns:
        ``{"n_true", "n_pred", "pairs": [(true_id, pred_id, iou)], "by_threshold": {t: {tp, fp, fn, precision,
        recall, f1}}, "missed": [true ids unmatched at 0.5], "spurious": [pred ids unmatched at 0.5]}``
    """
    iou, true_ids, pred_ids = iou_matrix(true, pred)
    rows, cols = linear_sum_assignment(-iou) if iou.size else (np.array([], int), np.array([], int))
    pairs = [(int(true_ids[r]), int(pred_ids[c]), float(iou[r, c])) for r, c in zip(rows, cols) if iou[r, c] > 0]
    result = {"n_true": len(true_ids), "n_pred": len(pred_ids), "pairs": pairs, "by_threshold": {}}
    for t in thresholds:
        tp = sum(1 for _, _, v in pairs if v >= t)
        fp, fn = len(pred_ids) - tp, len(true_ids) - tp
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
        result["by_threshold"][float(t)] = {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}
    matched = [(a, b) for a, b, v in pairs if v >= 0.5]
    result["missed"] = sorted(set(int(i) for i in true_ids) - {a for a, _ in matched})
    result["spurious"] = sorted(set(int(i) for i in pred_ids) - {b for _, b in matched})
    return result
