"""Nuclei as objects: match predicted to true ones, count hallucinated and missed nuclei (the detector that
turns an image into nuclei is :class:`stainless.inference.nuclei.NucleusDetector`).

A virtual nuclei image can score well on SSIM and still show nuclei that are not there (hallucinated) or lack
real ones (missed). Here both images are turned into instance labels by the same detector and matched
one-to-one by IoU (:func:`stainless.metrics.objects.match_objects`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries
from torchmetrics.functional.classification import binary_auroc

from stainless.io import write_tiff
from stainless.metrics.objects import IOU_THRESHOLDS, match_objects
from stainless.utils.visuals import to_rgb

HALLUCINATED = (1.0, 0.15, 0.85)  # magenta: predicted nucleus without a true partner
MISSED = (0.1, 0.85, 1.0)  # cyan: true nucleus without a predicted partner
MATCHED = (1.0, 0.85, 0.1)  # yellow: found


def score_nuclei(true: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = IOU_THRESHOLDS) -> dict[str, Any]:
    """Match predicted to true nuclei and count, per the IoU-0.5 matching: found, hallucinated, missed.

    Returns:
        :func:`match_objects`'s result plus ``tp``, ``hallucinated``, ``missed``, ``precision``, ``recall``,
        ``f1`` (at IoU 0.5), ``count_error`` (predicted minus true count) and the id lists ``hallucinated_ids``,
        ``missed_ids``, ``matched`` ((true id, predicted id) pairs at IoU >= 0.5).
    """
    result = match_objects(true, pred, sorted({0.5, *thresholds}))
    missed_ids, hallucinated_ids = result.pop("missed"), result.pop("spurious")
    at_half = result["by_threshold"][0.5]
    result.update(
        tp=at_half["tp"], hallucinated=at_half["fp"], missed=at_half["fn"], precision=at_half["precision"],
        recall=at_half["recall"], f1=at_half["f1"], count_error=result["n_pred"] - result["n_true"],
        hallucinated_ids=hallucinated_ids, missed_ids=missed_ids,
        matched=[(a, b) for a, b, v in result["pairs"] if v >= 0.5],
    )
    return result


def error_masks(true: np.ndarray, pred: np.ndarray, score: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(pixels of hallucinated or missed nuclei, pixels of correctly found nuclei) as boolean masks."""
    kinds = error_kinds(true, pred, score)
    wrong = kinds["invented"] | kinds["missed"]
    return wrong, (kinds["found_true"] | kinds["found"]) & ~wrong


def error_kinds(true: np.ndarray, pred: np.ndarray, score: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Boolean masks: ``invented`` (pixels of hallucinated predicted nuclei), ``missed`` (of true nuclei not found),
    ``found`` (of predicted nuclei matched to a true one) and ``found_true`` (of the true nuclei they match)."""
    return {"invented": np.isin(pred, score["hallucinated_ids"]), "missed": np.isin(true, score["missed_ids"]),
            "found": np.isin(pred, [b for _, b in score["matched"]]),
            "found_true": np.isin(true, [a for a, _ in score["matched"]])}


def outline_nuclei(image: torch.Tensor, true: np.ndarray, pred: np.ndarray, score: Mapping[str, Any]) -> torch.Tensor:
    """(3, H, W) picture: ``image`` in grey, found nuclei outlined yellow, hallucinated magenta, missed cyan."""
    rgb = to_rgb(image[None])[0] * 0.8
    matched_pred = [b for _, b in score["matched"]]
    for labels, ids, colour in ((pred, matched_pred, MATCHED), (true, score["missed_ids"], MISSED),
                                (pred, score["hallucinated_ids"], HALLUCINATED)):
        if not len(ids):
            continue
        edge = torch.from_numpy(find_boundaries(np.where(np.isin(labels, ids), labels, 0), mode="inner"))
        for c in range(3):
            rgb[c][edge] = colour[c]
    return rgb


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC of ``scores`` for telling positives from negatives (torchmetrics); None without both classes."""
    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
        return None
    return float(binary_auroc(torch.as_tensor(np.asarray(scores, np.float64)), torch.from_numpy(positive).long()))


class MapSeparation:
    """How well each pixel map separates pixels of wrong nuclei from those of correct nuclei.

    Three questions, each scored by ROC AUC over pixels pooled over images (at most ``max_pixels`` per class and
    map, sampled with a fixed seed); 1.0 means the map is higher on every wrong pixel than on any right one, 0.5
    means it carries no information:

    - ``roc_auc``: pixels of hallucinated or missed nuclei against pixels of found nuclei (true or predicted);
    - ``invented_auc``: pixels of hallucinated predicted nuclei against pixels of found predicted nuclei. This is
      the question a map of the prediction alone (the uncertainty) can answer on new images: which of the
      nuclei it drew are invented;
    - ``missed_auc``: pixels of missed true nuclei against pixels of found true nuclei (error maps can see them,
      a map of the prediction mostly cannot: nothing was drawn there).
    """

    def __init__(self, max_pixels: int = 2_000_000, seed: int = 0):
        self.max_pixels = max_pixels
        self.rng = np.random.default_rng(seed)
        self.values: dict[str, dict[str, list[np.ndarray]]] = {}

    def update(self, maps: Mapping[str, np.ndarray], wrong: np.ndarray, right: np.ndarray,
               kinds: Mapping[str, np.ndarray] | None = None) -> None:
        """Add one image: ``wrong``/``right`` masks (see :func:`error_masks`) and optionally the masks of
        :func:`error_kinds` for the invented / missed questions."""
        for name, values in maps.items():
            store = self.values.setdefault(name, {})
            store.setdefault("wrong", []).append(values[wrong])
            store.setdefault("right", []).append(values[right])
            if kinds is not None:
                for kind in ("invented", "missed", "found", "found_true"):
                    store.setdefault(kind, []).append(values[kinds[kind]])

    def _pool(self, parts: list[np.ndarray]) -> np.ndarray:
        pooled = np.concatenate(parts) if parts else np.zeros(0)
        if len(pooled) > self.max_pixels:
            pooled = self.rng.choice(pooled, self.max_pixels, replace=False)
        return pooled

    def _auc(self, store: dict[str, list[np.ndarray]], positive: str, negative: str) -> tuple[float | None, int, int]:
        pos, neg = self._pool(store.get(positive, [])), self._pool(store.get(negative, []))
        auc = roc_auc(np.concatenate([pos, neg]), np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)])
        return auc, len(pos), len(neg)

    def compute(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, store in self.values.items():
            auc, n_wrong, n_right = self._auc(store, "wrong", "right")
            out[name] = {"roc_auc": auc, "n_wrong_pixels": n_wrong, "n_right_pixels": n_right}
            if "invented" in store:
                out[name]["invented_auc"], out[name]["n_invented_pixels"], _ = self._auc(store, "invented", "found")
                out[name]["missed_auc"], out[name]["n_missed_pixels"], _ = self._auc(store, "missed", "found_true")
        return out


def nuclei_table(labels: np.ndarray, image: np.ndarray, risk_map: np.ndarray | None = None,
                 risks: Mapping[int, float] | None = None) -> list[dict[str, Any]]:
    """One row per nucleus: id, centroid, area, mean intensity and (with ``risk_map`` or ``risks``) its risk score.

    With ``risks`` (nucleus id -> score, e.g. the object disagreement of
    :func:`stainless.inference.uncertainty.object_disagreement`), those are the risk and the uncertainty. Else the
    risk is the mean of ``risk_map`` over the nucleus divided by its mean predicted intensity: a nucleus that
    appears under some test-time augmentations (or dropout samples) and not others has a large spread relative to
    its brightness.
    """
    ids = np.unique(labels[labels > 0])
    if not len(ids):
        return []
    grey = image.mean(0) if image.ndim == 3 else image
    area = ndi.sum_labels(np.ones_like(grey), labels, ids)
    mean = ndi.mean(grey, labels, ids)
    centres = ndi.center_of_mass(np.ones_like(grey), labels, ids)
    spread = ndi.mean(risk_map, labels, ids) if risk_map is not None else [None] * len(ids)
    rows = []
    for i, a, m, (cy, cx), s in zip(ids, area, mean, centres, spread):
        row = {"nucleus": int(i), "y": round(float(cy), 1), "x": round(float(cx), 1), "area": int(a),
               "mean_intensity": float(m)}
        if risks is not None:
            row["uncertainty"] = row["risk"] = float(risks[int(i)])
        elif s is not None:
            row["uncertainty"] = float(s)
            row["risk"] = float(s / max(m, 1e-3))
        rows.append(row)
    return rows


def write_labels(path: Path, labels: np.ndarray) -> None:
    write_tiff(path, labels.astype(np.uint16 if labels.max() < 65536 else np.uint32))
