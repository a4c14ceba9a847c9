"""Object-level evaluation of virtual nuclei images: hallucinated and missed nuclei, and how to foresee them.

Used by :func:`stainless.evaluate.evaluate` for image-to-image checkpoints. Per image, nuclei are detected in
the prediction (and in each baseline), matched to the true nuclei (the samples' label images, or the detector
run on the target), and counted; pixel maps and the uncertainty map are scored on how well they separate the
pixels of wrong nuclei from those of right ones; each predicted nucleus gets a risk score from the uncertainty.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stainless.inference.nuclei import NucleusDetector
from stainless.metrics.nuclei import (
    MapSeparation,
    error_kinds,
    error_masks,
    nuclei_table,
    roc_auc,
    score_nuclei,
)
from stainless.metrics.objects import IOU_THRESHOLDS

COLUMNS = ("n_true", "n_pred", "nuclei_tp", "hallucinated", "missed", "nuclei_precision", "nuclei_recall",
           "nuclei_f1", "count_error")
TABLE_COLUMNS = ("image", "nucleus", "status", "y", "x", "area", "area_um2", "mean_intensity", "uncertainty", "risk")


class NucleiEvaluation:
    """Accumulates object-level scores over the images of one evaluation.

    Args:
        detector: finds nuclei in predictions (and in targets that have no label image).
        use_labels: take the true nuclei from the samples' label images when they have one.
    """

    def __init__(self, detector: NucleusDetector, use_labels: bool = True):
        self.detector = detector
        self.use_labels = use_labels
        self.truth_sources: set[str] = set()
        self.counts: dict[str, dict[float, np.ndarray]] = {}  # method -> threshold -> [tp, fp, fn]
        self.count_errors: dict[str, list[int]] = {}
        self.maps = MapSeparation()
        self.risk: list[tuple[float, bool]] = []  # (risk, hallucinated) of every predicted nucleus with a truth
        self.table: list[dict[str, Any]] = []

    def truth(self, target: np.ndarray | None, labels: np.ndarray | None) -> np.ndarray | None:
        """The true nuclei of one image, or None when it has neither labels nor a target."""
        if labels is not None and self.use_labels:
            self.truth_sources.add("label images")
            return labels
        if target is None:
            return None
        self.truth_sources.add("the detector run on the target")
        return self.detector(target)

    def score(self, method: str, image: np.ndarray, true: np.ndarray,
              found: np.ndarray | None = None) -> tuple[dict[str, Any], np.ndarray, dict]:
        """Detect nuclei in one method's image (unless ``found`` gives them) and score them: (row values, predicted
        labels, full score)."""
        found = self.detector(image) if found is None else found
        score = score_nuclei(true, found)
        per_t = self.counts.setdefault(method, {t: np.zeros(3, int) for t in IOU_THRESHOLDS})
        for t, s in score["by_threshold"].items():
            per_t[t] += (s["tp"], s["fp"], s["fn"])
        self.count_errors.setdefault(method, []).append(score["count_error"])
        row = {"n_true": score["n_true"], "n_pred": score["n_pred"], "nuclei_tp": score["tp"],
               "hallucinated": score["hallucinated"], "missed": score["missed"], "nuclei_precision": score["precision"],
               "nuclei_recall": score["recall"], "nuclei_f1": score["f1"], "count_error": score["count_error"]}
        return row, found, score

    def add_model_image(
        self, name: str, prediction: np.ndarray, found: np.ndarray, true: np.ndarray | None, score: dict | None,
        maps: dict[str, np.ndarray], uncertainty: np.ndarray | None, pixel_size: float | None = None,
        spread: np.ndarray | None = None, risks: dict[int, float] | None = None,
    ) -> None:
        """Record the model's nuclei of one image: the per-nucleus table (areas also in µm² when ``pixel_size`` is
        known), risk (``risks`` by nucleus id where given, the object disagreement; else from ``spread``, the plain
        standard deviation, or ``uncertainty``, relative to brightness), and map separation."""
        start = len(self.table)
        status = {}
        if score is not None:
            status = {b: "found" for _, b in score["matched"]} | {b: "hallucinated" for b in score["hallucinated_ids"]}
            wrong, right = error_masks(true, found, score)
            extra = {"uncertainty": uncertainty} if uncertainty is not None else {}
            if spread is not None:  # the plain standard deviation, scored beside the relative map for comparison
                extra["spread"] = spread
            self.maps.update(maps | extra, wrong, right, error_kinds(true, found, score))
        for row in nuclei_table(found, prediction, spread if spread is not None else uncertainty, risks):
            row = {"image": name, "status": status.get(row["nucleus"], "unknown"), **row}
            self.table.append(row)
            if score is not None and "risk" in row:
                self.risk.append((row["risk"], row["status"] == "hallucinated"))
        if score is not None:
            for true_id in score["missed_ids"]:  # missed nuclei have no prediction to score, but belong in the list
                ys, xs = np.nonzero(true == true_id)
                self.table.append({"image": name, "nucleus": -int(true_id), "status": "missed",
                                   "y": round(float(ys.mean()), 1), "x": round(float(xs.mean()), 1), "area": len(ys)})
        for row in self.table[start:]:
            row["area_um2"] = row["area"] * pixel_size**2 if pixel_size else None

    def write_table(self, path: Path) -> None:
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=TABLE_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.table)

    def summary(self) -> dict[str, Any]:
        by_method = {}
        for method, per_t in self.counts.items():
            scores = {}
            for t, (tp, fp, fn) in per_t.items():
                scores[t] = {"tp": int(tp), "hallucinated": int(fp), "missed": int(fn),
                             "precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / (tp + fn) if tp + fn else 1.0,
                             "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0}
            errors = np.asarray(self.count_errors[method], float)
            by_method[method] = {**scores[0.5], "mean_f1_over_iou_thresholds": float(np.mean([s["f1"] for s in scores.values()])),
                                 "count_error_mean": float(errors.mean()), "count_error_mean_abs": float(np.abs(errors).mean()),
                                 "by_iou_threshold": {str(t): s for t, s in scores.items()}}
        risks = np.asarray([r for r, _ in self.risk], float)
        flags = np.asarray([h for _, h in self.risk], bool)
        return {
            "truth": " and ".join(sorted(self.truth_sources)) or "none",
            "detector": {k: v for k, v in vars(self.detector).items() if not k.startswith("_")},
            "pooled_over_images": by_method,
            "map_separation": self.maps.compute(),
            "risk_separation": {"roc_auc": roc_auc(risks, flags), "n_hallucinated": int(flags.sum()),
                                "n_found": int((~flags).sum())},
        }


def _by_objects(summary: dict[str, Any]) -> bool:
    """Whether this run's uncertainty map is the object disagreement (``uncertainty.map=objects``, the default)."""
    return summary.get("uncertainty", {}).get("map", "objects") == "objects"


def _map_words(summary: dict[str, Any]) -> str:
    """What the uncertainty map of this run shows, in a sentence."""
    if _by_objects(summary):
        return ("it is, for each predicted nucleus, 1 minus its mean IoU with the nuclei detected in each test-time "
                "prediction (does the same nucleus come back every time?), and elsewhere the share of those "
                "predictions that detect a nucleus there (relative_spread: the pixel spread, for comparison).")
    return "it is the spread of the test-time predictions relative to their brightness."


def separation_maps(maps: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The pixel maps scored for separation, as (H, W) arrays where higher means worse."""
    out = {"abs_error": maps["abs_error"][0].mean(0).numpy(), "1-ssim": 1 - maps["ssim"][0].mean(0).numpy()}
    if "lpips" in maps:
        out["lpips"] = maps["lpips"][0].mean(0).numpy()
    return out


def report_section(summary: dict[str, Any]) -> tuple[str, list[str]]:
    """The report's plain-language account of hallucinated and missed nuclei, with this run's numbers."""
    nuclei = summary["nuclei"]
    paragraphs = [f"True nuclei come from {nuclei['truth']}; predicted nuclei from the {nuclei['detector']['method']} "
                  "detector. Each predicted nucleus is matched to at most one true nucleus (optimal assignment on IoU); "
                  "at IoU >= 0.5 a pair counts as found, an unmatched prediction as hallucinated and an unmatched true "
                  "nucleus as missed. In the 'nuclei' figures, found nuclei are outlined yellow, hallucinated magenta, "
                  "missed cyan."]
    for method, s in nuclei["pooled_over_images"].items():
        paragraphs.append(f"{method}: {s['tp']} found, {s['hallucinated']} hallucinated, {s['missed']} missed; precision "
                          f"{s['precision']:.3f}, recall {s['recall']:.3f}, F1 {s['f1']:.3f} (mean F1 over IoU 0.5-0.95: "
                          f"{s['mean_f1_over_iou_thresholds']:.3f}); mean count error {s['count_error_mean']:+.2f} per image.")
    separation = {k: v["roc_auc"] for k, v in nuclei["map_separation"].items() if v["roc_auc"] is not None}
    invented = {k: v["invented_auc"] for k, v in nuclei["map_separation"].items() if v.get("invented_auc") is not None}
    if separation:
        paragraphs.append(
            "Can the pixel maps find them? ROC AUC of each map for telling pixels of hallucinated or missed nuclei "
            "from pixels of correctly found nuclei (1: always higher on wrong nuclei, 0.5: no better than chance): "
            + ", ".join(f"{k} {v:.3f}" for k, v in separation.items()) + ".")
    if invented:
        paragraphs.append(
            "Which of the drawn nuclei are invented? ROC AUC of each map for telling pixels of hallucinated nuclei from "
            "pixels of found predicted nuclei: " + ", ".join(f"{k} {v:.3f}" for k, v in invented.items()) + ". Only "
            f"the uncertainty map is available on new images without ground truth; {_map_words(summary)} Higher "
            "means more likely invented. Missed nuclei leave nothing in the prediction for it to flag.")
    else:
        paragraphs.append("Map separation: not computed (this run had no hallucinated or missed nuclei, or no found ones).")
    risk = nuclei["risk_separation"]
    if risk["roc_auc"] is not None:
        paragraphs.append(
            "Without ground truth, each predicted nucleus gets a risk score ("
            + ("its object disagreement" if _by_objects(summary) else "its uncertainty relative to its brightness")
            + f", see nuclei.csv). Here the risk flags hallucinated nuclei with ROC AUC {risk['roc_auc']:.3f} "
            f"({risk['n_hallucinated']} hallucinated vs {risk['n_found']} found nuclei); trust it on new images only as "
            "far as this number allows.")
    else:
        paragraphs.append("Risk separation: not computed (needs an uncertainty method and both hallucinated and found "
                          "nuclei).")
    return "Hallucinated and missed nuclei", paragraphs
