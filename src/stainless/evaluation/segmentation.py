"""Evaluating a segmentation checkpoint: pixel and object scores on images, and cells over time in videos."""

from __future__ import annotations

import copy
import csv
import time
from functools import partial
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, open_dict

from stainless import video as vid
from stainless.data.datamodule import MicroscopyDataModule
from stainless.data.datasets import load_sample
from stainless.evaluation.inputs import new_input_samples
from stainless.evaluation.report import SEGMENTATION_EXPLANATIONS, print_outcome, verdict, verdict_section, write_report
from stainless.inference.tiling import predict_tiled
from stainless.inference.uncertainty import symmetry_averaged
from stainless.io import ImageReadError, agreed_pixel_size, check_pixel_size, pixel_size_of, write_tiff
from stainless.metrics.objects import (
    IOU_THRESHOLDS,
    MISSED_KINDS,
    OBJECT_ERRORS,
    SEED_CHOICES,
    SEED_RULES,
    SPURIOUS_KINDS,
    SPLIT_FRACTIONS,
    check_seeds,
    check_unseeded,
    decode_instances,
    instances_from_mask,
    match_objects,
    mean_average_precision,
    object_errors,
    size_parameters,
    split_distance,
    split_key,
    tune_split,
)
from stainless.models.ensemble import checkpoint_label
from stainless.utils.logging import describe, save_config, write_json
from stainless.utils.visuals import to_rgb

SWEEP = tuple(np.round(np.arange(0.1, 0.95, 0.1), 2))
NOTES = (
    "Overlays: true positives white, false positives red, false negatives blue. Object scores split the "
    "predicted mask into cells (a watershed seeded by the model's instance head when it has one, else by the "
    "mask's distance transform) and match them one-to-one to the true cells."
)


def tta_views(cfg: DictConfig) -> int:
    """``segmentation.tta``: how many of the 8 flips/rotations each field's maps are averaged over (1: none)."""
    n = cfg.get("segmentation", {}).get("tta", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 8:
        raise ValueError(f"segmentation.tta={n!r}: must be a whole number of flips/rotations from 1 (none) to 8")
    return n


def _maps(module, image: np.ndarray, tile: int, cfg: DictConfig, device) -> np.ndarray:
    """(C, H, W): foreground probability, then the instance head's map if the model has one; tiled, averaged over
    ``segmentation.tta`` flips/rotations."""
    x = torch.from_numpy(image).to(device)
    views = tta_views(cfg)
    predict = symmetry_averaged(partial(vid.segmentation_maps, module), views)
    # each tile goes through the network once per view: fewer tiles per call keep the network's batch as set
    maps = predict_tiled(predict, x, tile, cfg.tile_overlap, max(1, cfg.batch_size // views), module.size_multiple)
    return maps.cpu().numpy()


def _overlay(image: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> torch.Tensor:
    rgb = to_rgb(torch.from_numpy(image[:1])[None])[0] * 0.6
    for mask, colour in ((pred & truth, (1, 1, 1)), (pred & ~truth, (1, 0.1, 0.1)), (~pred & truth, (0.1, 0.4, 1))):
        for c in range(3):
            rgb[c][torch.from_numpy(mask)] = colour[c]
    return rgb[None]


def evaluate_segmentation(cfg: DictConfig, module, checkpoint: dict, out_dir: Path, device,
                          samples: list | None = None) -> dict[str, Any]:
    """Score a segmentation model on ``samples`` (checked ``input=`` images) or the checkpoint's ``cfg.stage`` split,
    and write files; see ``evaluate``."""
    data_hp = checkpoint["datamodule_hyper_parameters"]
    datamodule = MicroscopyDataModule(**data_hp)
    if samples is None:
        datamodule.prepare_data()
        samples = datamodule.find_samples()[cfg.stage]
    threshold = module.hparams.threshold
    instances = vid.instance_mode(module)
    sizes = object_sizes(cfg, module, data_hp, device)
    tile = cfg.tile_size or 2 * data_hp["patch_size"]
    rows, figures = [], []
    (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    sweep = {t: [0, 0] for t in SWEEP}  # threshold -> [intersection, union] over all images
    objects_total = {t: {"tp": 0, "fp": 0, "fn": 0} for t in IOU_THRESHOLDS}
    for sample in samples:
        loaded = load_sample(sample, data_hp.get("normalization") or {}, "mask", data_hp.get("channel_axis", "auto"),
                             **datamodule.load_options)
        maps = _maps(module, loaded.source, tile, cfg, device)
        prob = maps[0]
        pred = prob > threshold
        pred_instances = decode_instances(maps, instances, threshold, sizes["min_size"], sizes["min_distance"],
                                          sizes["seed_threshold"], sizes["seeds"], sizes["unseeded"],
                                          sizes["split_fraction"])
        size = pixel_size_of(sample.source, cfg.pixel_size)
        write_tiff(out_dir / "predictions" / f"{sample.name}_probability.tif", prob.astype(np.float32), size)
        if len(maps) > 1:
            write_tiff(out_dir / "predictions" / f"{sample.name}_{instances}.tif", maps[1].astype(np.float32), size)
        write_tiff(out_dir / "predictions" / f"{sample.name}_labels.tif", pred_instances.astype(np.uint16), size)
        if loaded.target is None:
            rows.append({"image": sample.name, "method": "model", "n_cells": int(pred_instances.max())})
            continue
        truth = loaded.target > 0
        true_instances = true_objects(truth, loaded.labels)
        row, matched = score_masks(pred, pred_instances, truth, true_instances)
        rows.append({"image": sample.name, "method": "model", **row})
        if cfg.baselines:
            for method, mask in baseline_masks(loaded.source).items():
                spacing = split_distance(mask, sizes["min_size"], sizes["min_distance"], sizes["split_fraction"])
                baseline_instances = instances_from_mask(mask, sizes["min_size"], spacing)
                rows.append({"image": sample.name, "method": method,
                             **score_masks(mask, baseline_instances, truth, true_instances)[0]})
        for t in SWEEP:
            p = prob > t
            sweep[t][0] += int((p & truth).sum())
            sweep[t][1] += int((p | truth).sum())
        for t, scores in matched["by_threshold"].items():
            for k in ("tp", "fp", "fn"):
                objects_total[t][k] += scores[k]
        overlay = _overlay(loaded.source, pred, truth)
        iio.imwrite(out_dir / "overlays" / f"{sample.name}.png", (overlay[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
        figures.append({"name": sample.name, "panels": {
            "input": to_rgb(torch.from_numpy(loaded.source[:1])[None]),
            "probability": to_rgb(torch.from_numpy(prob)[None, None]), "overlay": overlay}})

    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(out_dir / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    names = ("iou", "dice", "precision", "recall", "object_f1", "missed", "spurious")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    stats = {m: {n: describe([r[n] for r in rows if r["method"] == m and n in r]) for n in names
                 if any(n in r for r in rows if r["method"] == m)} for m in methods}
    stats = {m: v for m, v in stats.items() if v}
    objects = {}
    for t, c in objects_total.items():
        denom = 2 * c["tp"] + c["fp"] + c["fn"]
        objects[str(t)] = {**c, "precision": c["tp"] / max(c["tp"] + c["fp"], 1),
                           "recall": c["tp"] / max(c["tp"] + c["fn"], 1), "f1": 2 * c["tp"] / denom if denom else 1.0}
    return {
        "kind": "segmentation",
        "n_images": len(samples),
        "threshold": threshold,
        "metrics": stats,
        "baselines": "Otsu threshold of the input (the minority side is foreground) and the all-foreground mask, "
                     "split into cells like the model's mask" if cfg.baselines else "none",
        "objects_by_iou": objects,
        "mean_ap_50_95": mean_average_precision(objects_total),
        # why the model's cells are unmatched at IoU 0.5, summed over the images (per image: metrics.csv)
        "object_errors": {key: sum(r[key] for r in rows if r["method"] == "model" and key in r)
                          for key in OBJECT_ERRORS},
        "object_sizes": sizes,
        "instances": instances,
        "iou_by_threshold": {str(t): (i / u if u else None) for t, (i, u) in sweep.items()},
        "_rows": rows, "_figures": figures,
    }


def object_sizes(cfg: DictConfig, module, data_hp: dict | None = None, device=None) -> dict[str, Any]:
    """The post-processing settings of this evaluation, printed with where they came from: the sizes
    (``min_size``, ``min_distance``, ``max_distance``) from ``segmentation.*`` or the object scale recorded in the
    checkpoint, and the split of touching objects (``seed_threshold`` for an instance head, a level or with
    ``segmentation.seeds=hmaxima`` a depth; ``min_distance`` without one or with ``seeds=shape``): a number given
    wins; ``auto`` is tuned on the checkpoint's annotated validation and training fields (``segmentation.tune``,
    ``segmentation.tune_on``, see :func:`tune_split_setting`), else the default. With ``seeds=auto`` (an instance
    head) each rule of ``SEED_CHOICES`` is tuned there and the one with the better object F1 decodes (a tie, or
    nothing to tune on: ``threshold``). ``split_fraction`` is set when ``min_distance`` was tuned as a fraction of
    each image's own diameter (then ``min_distance`` is that fraction of the training annotations' diameter, for the
    record)."""
    sizes = size_parameters(cfg.segmentation, module.hparams.get("object_scale"))
    sizes["tta"] = tta_views(cfg)  # checked before tuning, which would take the error for unreadable data
    if cfg.segmentation.get("tune_on", "train+val") not in TUNE_ON:
        raise ValueError(f"segmentation.tune_on={cfg.segmentation.tune_on!r}: use {' or '.join(TUNE_ON)}")
    seed = cfg.segmentation.get("seed_threshold", "auto")
    if seed != "auto" and (isinstance(seed, bool) or not isinstance(seed, (int, float)) or not 0 < seed < 1):
        raise ValueError(f"segmentation.seed_threshold={seed!r}: must be auto or a number between 0 and 1")
    seeds = check_seeds(cfg.segmentation.get("seeds", "auto"), tuned=True)
    sizes["unseeded"] = check_unseeded(cfg.segmentation.get("unseeded", "auto"), tuned=True)
    mode = vid.instance_mode(module)
    choose_seeds = mode != "none" and seeds == "auto"
    rules = SEED_CHOICES if choose_seeds else ("threshold" if seeds == "auto" else seeds,)
    tune = cfg.segmentation.get("tune", True) and data_hp is not None
    fields = None  # the tuning fields' maps and truth: computed once, for every rule
    # a rule still to choose (an instance head's unseeded or seeds auto) is tuned at a given split setting
    choose_rule = mode != "none" and (sizes["unseeded"] == "auto" or choose_seeds)
    tried = {}
    for rule in rules:
        rule_sizes = {**sizes, "seeds": rule, "split_fraction": None,
                      "seed_threshold": SEED_RULES.get(rule, (0.5,))[0] if seed == "auto" else float(seed)}
        key = split_key(mode, rule)
        given = cfg.segmentation.get(key, "auto") not in (None, "auto")
        if (given and not choose_rule) or not tune:
            source = f"segmentation.{key}={rule_sizes[key]}" if given else "default (tuning off)"
            rule_sizes["split"] = {"key": key, "value": rule_sizes[key], "source": source}
        else:
            if fields is None:
                fields = tuning_fields(cfg, module, data_hp, device)
            rule_sizes["split"] = tune_split_setting(cfg, module, rule_sizes, mode, fields, given)
            rule_sizes[key] = rule_sizes["split"]["value"]
            fraction = rule_sizes["split_fraction"] = rule_sizes["split"].get("fraction")
            if fraction is not None:  # each image at its own scale; at the training annotations' for the record
                rule_sizes[key] = max(2, int(round(fraction * (sizes["diameter"] or rule_sizes[key] / 0.3))))
        tried[rule] = rule_sizes
    # the first of equals (threshold) when F1s tie or were not measured
    best = max(rules, key=lambda rule: tried[rule]["split"].get("f1", -1.0))
    sizes = tried[best]
    if choose_seeds and "f1" in sizes["split"]:
        seeds_f1 = sizes["split"]["seeds_f1"] = {rule: tried[rule]["split"]["f1"] for rule in rules}
        sizes["split"]["source"] += (f"; seeds: {best}, chosen on the same fields (object F1 "
                                     + ", ".join(f"{seeds_f1[r]:.3f} with {r}" for r in rules) + ")")
    if sizes["unseeded"] == "auto":  # not tuned (no head, tuning off, no annotated field): keep
        sizes["unseeded"] = sizes["split"].get("unseeded", "keep")
    diameter = f"diameter {sizes['diameter']:.1f} px" if sizes["diameter"] else "no diameter"
    rank_zero_info(f"Object scale: {diameter} from {sizes['source']}; smallest object {sizes['min_size']} px, "
                   f"touching objects split {sizes['min_distance']} px apart, tracking radius {sizes['max_distance']} px")
    rank_zero_info(f"Splitting touching objects: {split_setting(sizes, mode)}"
                   + (f"; maps averaged over {sizes['tta']} flips/rotations" if sizes["tta"] > 1 else ""))
    return sizes


def split_setting(sizes: dict[str, Any], mode: str) -> str:
    """How touching objects are split (from :func:`object_sizes`), in words: the setting, the seed rules of an
    instance head, and where the setting came from."""
    key = sizes["split"]["key"]
    setting = (f"{key} {sizes[key]:g}" if sizes.get("split_fraction") is None else
               f"{key} {sizes['split_fraction']:g} x each image's own object diameter ({sizes[key]} px at the "
               "training one)")
    rule = f" (seeds: {sizes['seeds']}; foreground no seed reaches: {sizes['unseeded']})" if mode != "none" else ""
    return f"{setting}{rule} ({sizes['split']['source']})"


# Training fields that tuning adds to the validation split (spread evenly over the split): enough for the rules that
# need many fields (a split distance at each image's own scale), a bounded cost on datasets of hundreds of images
TUNING_TRAINING_FIELDS = 16
TUNE_ON = ("train+val", "val")


def tuning_fields(cfg: DictConfig, module, data_hp: dict, device) -> tuple[list, str]:
    """The model's maps and the true objects of the annotated fields that the split settings are tuned on
    (``segmentation.tune_on``): the checkpoint's validation split, and with ``train+val`` (the default) up to
    ``TUNING_TRAINING_FIELDS`` of its training fields too; with them, where they are (or why there are none)."""
    tune_on = cfg.segmentation.get("tune_on", "train+val")  # checked by object_sizes
    fields, counts = [], {"val": 0, "train": 0}
    try:
        datamodule = MicroscopyDataModule(**data_hp)
        datamodule.prepare_data()
        splits = datamodule.find_samples()
        training = splits["train"] if tune_on == "train+val" else []
        if len(training) > TUNING_TRAINING_FIELDS:
            training = [training[i] for i in np.linspace(0, len(training) - 1, TUNING_TRAINING_FIELDS).round().astype(int)]
        tile = cfg.tile_size or 2 * data_hp["patch_size"]
        for stage, samples in (("val", splits["val"]), ("train", training)):
            for sample in samples:
                loaded = load_sample(sample, data_hp.get("normalization") or {}, "mask",
                                     data_hp.get("channel_axis", "auto"), **datamodule.load_options)
                if loaded.target is not None:
                    fields.append((_maps(module, loaded.source, tile, cfg, device),
                                   true_objects(loaded.target > 0, loaded.labels)))
                    counts[stage] += 1
    except (OSError, ImageReadError, ValueError) as error:
        return [], f"the {'training and ' if tune_on == 'train+val' else ''}validation split could not be read ({error})"
    if not fields:
        return [], f"no annotated objects in the {'training or ' if tune_on == 'train+val' else ''}validation split"
    where = f"{counts['val']} validation field(s)" + (f" and {counts['train']} training field(s)" if counts["train"] else "")
    return fields, where


def tune_split_setting(cfg: DictConfig, module, sizes: dict, mode: str, fields: tuple[list, str],
                       given: bool = False) -> dict[str, Any]:
    """``seed_threshold`` (instance heads) or ``min_distance`` (a mask split by its distance transform, or an instance
    head with ``seeds=shape``) tuned on ``fields``, the annotated fields of the checkpoint's validation split and by
    default of its training split (:func:`tuning_fields`): the value with the best object F1 at IoU 0.5 there
    (:func:`stainless.metrics.objects.tune_split`), and with ``segmentation.unseeded=auto`` the rule for foreground
    no seed reaches (at the ``given`` value when the setting was given). ``min_distance`` is tried as fractions of
    the training annotations' diameter and, unless ``segmentation.diameter`` is given, as the same fractions of each
    image's own diameter (``fraction`` in the result). The default when there are no such fields (the reason is in
    ``source``)."""
    key = split_key(mode, sizes["seeds"])
    default = sizes[key]
    image_fractions = ()
    if given:
        candidates = [default]
    elif key == "min_distance":
        scale = sizes["diameter"] or default / 0.3
        candidates = sorted({max(2, int(round(f * scale))) for f in SPLIT_FRACTIONS})
        if cfg.segmentation.get("diameter", "auto") in (None, "auto"):
            image_fractions = SPLIT_FRACTIONS
    else:
        candidates = list(SEED_RULES[sizes["seeds"]][1])
    fields, where = fields
    n_objects = sum(len(np.unique(truth)) - 1 for _, truth in fields)
    if not n_objects:
        reason = where if not fields else "no annotated objects in the tuning fields"
        return {"key": key, "value": default, "fraction": None,
                "source": f"segmentation.{key}={default:g} ({reason})" if given else f"default: {reason}"}
    tuned = tune_split(fields, mode, module.hparams.threshold, sizes["min_size"], candidates, default, sizes["seeds"],
                       sizes["unseeded"], image_fractions)
    on = f"{where} with {n_objects} objects"
    chosen = (f"{tuned['fraction']:g} x each image's own object diameter" if tuned["fraction"] is not None
              else f"{tuned['value']:g}")
    tuned["source"] = (f"segmentation.{key}={default:g}" if given else
                       f"tuned on {on}: {chosen}, object F1 {tuned['f1']:.3f} against {tuned['default_f1']:.3f} at "
                       f"the default {default:g}")
    if "unseeded_f1" in tuned:
        rule_f1 = tuned["unseeded_f1"]
        tuned["source"] += (f"; foreground no seed reaches: {tuned['unseeded']}, chosen {f'on {on}' if given else 'there'}"
                            " (object F1 " + ", ".join(f"{rule_f1[r]:.3f} to {r} it" for r in rule_f1) + ")")
    tuned_on = ("val", "train") if cfg.segmentation.get("tune_on", "train+val") == "train+val" else ("val",)
    if cfg.get("stage") in tuned_on and not cfg.get("input") and not cfg.get("videos"):
        tuned["source"] += "; these are images it was tuned on, so their object scores are optimistic"
    tuned["scores"] = {str(k): v for k, v in tuned["scores"].items()}
    return tuned


def true_objects(truth: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """The true cells: the instance labels (LabelMe polygons, label images, instance masks) when there are any,
    else the connected components of the binary mask. Never a watershed: a split truth would make every score
    against it meaningless (one drawn cell counted as several)."""
    from skimage.measure import label

    return labels if labels is not None else label(truth, connectivity=1)


def score_masks(pred: np.ndarray, pred_instances: np.ndarray, truth: np.ndarray,
                true_instances: np.ndarray) -> tuple[dict[str, Any], dict]:
    """Pixel scores (IoU, Dice, precision, recall) of a binary mask and object scores (one-to-one matching at IoU
    0.5) of its cells against the truth; also the full matching."""
    inter, union = (pred & truth).sum(), (pred | truth).sum()
    tp, fp, fn = inter, (pred & ~truth).sum(), (~pred & truth).sum()
    matched = match_objects(true_instances, pred_instances)
    at50 = matched["by_threshold"][0.5]
    return {
        "iou": inter / union if union else 1.0, "dice": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
        "precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / (tp + fn) if tp + fn else 1.0,
        "object_f1": at50["f1"], "object_precision": at50["precision"], "object_recall": at50["recall"],
        "n_true": matched["n_true"], "n_pred": matched["n_pred"],
        "missed": len(matched["missed"]), "spurious": len(matched["spurious"]),
        **object_errors(true_instances, pred_instances, matched),
    }, matched


def errors_section(summary: dict[str, Any], rows: list[dict] | None = None) -> tuple[str, list[str]]:
    """The report's account of why cells are missed or invented (``summary["object_errors"]``), with the setting
    to try when merges or background dominate, and the image that holds most of them when one does (``rows``:
    the per-image rows of ``metrics.csv``)."""
    errors, sizes = summary["object_errors"], summary["object_sizes"]
    missed = {k: errors[f"missed_{k}"] for k in MISSED_KINDS}
    spurious = {k: errors[f"spurious_{k}"] for k in SPURIOUS_KINDS}
    lines = [f"At IoU 0.5, {sum(missed.values())} true cells were missed: {missed['merged']} merged with a neighbour "
             f"into one prediction, {missed['split']} split into pieces, {missed['not_found']} not found, "
             f"{missed['outlined_poorly']} found but outlined poorly (IoU below 0.5). {sum(spurious.values())} "
             f"predicted cells match no true cell: {spurious['background']} mostly on background, "
             f"{spurious['on_cells']} on cells (pieces of split cells, merges, outlines off their cell)."]
    if missed["merged"] and missed["merged"] * 2 >= sum(missed.values()):
        if summary["instances"] == "none":
            lines.append("Most misses are merges: a model with an instance head (model.instances=distance) learns "
                         "to part touching cells; it helped touching, irregular cells and not small round nuclei, "
                         "which the mask's own shape parts as well (BENCHMARKS.md, instance heads): compare on your "
                         "validation data.")
        elif sizes["seeds"] == "threshold":
            lines.append("Most misses are merges: compare segmentation.seeds=hmaxima, which seeds each peak of the "
                         "learned map, also where it stays high between touching cells (BENCHMARKS.md, instance "
                         "heads: it helped some models and not others).")
        elif sizes["seeds"] == "shape":
            lines.append("Most misses are merges: a smaller segmentation.min_distance (the closest seeds) parts "
                         "more cells.")
        else:
            lines.append("Most misses are merges: a smaller segmentation.seed_threshold (the depth a peak needs) "
                         "parts more cells.")
    if spurious["background"] and spurious["background"] * 2 >= sum(spurious.values()):
        if summary["instances"] != "none" and sizes["unseeded"] == "keep" and "unseeded_f1" not in sizes["split"]:
            lines.append("Most false cells lie on background: compare segmentation.unseeded=drop, which drops "
                         "foreground where the instance map shows no cell core, and watch the cells not found: it "
                         "helped a long-trained model of large cells and hurt briefly trained ones of small nuclei, "
                         "whose map peaks low in true cells too (BENCHMARKS.md, instance heads).")
        else:
            lines.append(f"Most false cells lie on background: the model's foreground threshold "
                         f"({summary['threshold']}) lets texture through; a longer training or more annotated "
                         f"background helps more than a higher threshold, which also erodes true cells "
                         f"(iou_by_threshold in summary.json).")
    worst = worst_image(rows or [])
    if worst:
        lines.append(worst)
    return "Why cells are missed or invented", lines


def worst_image(rows: list[dict]) -> str | None:
    """A sentence naming the image that holds an outsized share of the model's unmatched cells (missed and
    invented): at least a third of them and twice its share of the true cells, with three or more images scored.
    On DSB 2018's test split one brightfield field of six, with 15 % of the nuclei, held 36-56 % of the unmatched
    cells in 17 of 18 runs (object F1 0.20-0.44 there, 0.65-0.85 on the others), which pooled scores and the advice
    above hide; on the Usiigaci test fields the field with the most errors held 1.0-2.0 times its share of the cells.
    """
    scored = [r for r in rows if r["method"] == "model" and "object_f1" in r]
    if len(scored) < 3:
        return None
    worst = max(scored, key=lambda r: r["missed"] + r["spurious"])
    bad = worst["missed"] + worst["spurious"]
    total, cells = sum(r["missed"] + r["spurious"] for r in scored), sum(r["n_true"] for r in scored)
    if not total or not cells or bad * 3 < total or bad / total < 2 * worst["n_true"] / cells:
        return None
    # the others' object F1 pooled (per-image F1s of few cells are noisy): true positives against everything unmatched
    tp = cells - worst["n_true"] - sum(r["missed"] for r in scored if r is not worst)
    wrong = total - bad
    return (f"{bad} of the {total} unmatched cells ({worst['missed']} missed, {worst['spurious']} invented) "
            f"are in one image of {len(scored)}, {worst['image']}, which holds {worst['n_true']} of the {cells} true "
            f"cells: object F1 {worst['object_f1']:.2f} there, {2 * tp / max(2 * tp + wrong, 1):.2f} on the others "
            f"pooled (metrics.csv). An image unlike most training ones (another modality, stain, magnification or "
            f"intensity range) is a likely cause: annotate more like it for training, or check that it is normalised "
            f"like them (data.normalization).")


def baseline_masks(image: np.ndarray) -> dict[str, np.ndarray]:
    """What a segmenter must beat: Otsu's threshold of the (channel-averaged) input, the side covering less of the
    image taken as foreground (cells may be brighter or darker than the background), and everything foreground."""
    from skimage.filters import threshold_otsu

    grey = image.mean(0) if image.ndim == 3 else image
    above = grey > threshold_otsu(grey) if np.ptp(grey) > 0 else np.zeros(grey.shape, bool)
    otsu = above if above.mean() <= 0.5 else ~above
    return {"baseline_otsu": otsu, "baseline_all_foreground": np.ones(grey.shape, bool)}


def report_segmentation(out_dir: Path, summary: dict, cfg: DictConfig, sections: list | None = None) -> Path:
    rows, figures = summary.pop("_rows"), summary.pop("_figures")
    return write_report(out_dir, summary, rows, figures[: cfg.max_report_images], cfg.report,
                        SEGMENTATION_EXPLANATIONS, NOTES, sections)


def analyse_videos(cfg: DictConfig, module, checkpoint: dict, out_dir: Path, device=None) -> dict[str, Any]:
    """Cells over time in one video per condition: ``cells.csv``, ``fits.csv``, ``conditions.csv``, plots."""
    data_hp = checkpoint["datamodule_hyper_parameters"]
    videos = cfg.videos if not isinstance(cfg.videos, str) else {Path(cfg.videos).stem: cfg.videos}
    options = cfg.segmentation
    if tta_views(cfg) > 1:  # frames are segmented once each, so the split is tuned on single views too
        rank_zero_info(f"segmentation.tta={options.tta} applies to images; video frames are segmented without it")
        cfg = copy.deepcopy(cfg)
        with open_dict(cfg):
            cfg.segmentation.tta = 1
    sizes = object_sizes(cfg, module, data_hp, device)
    pixel_size, pixel_source = conditions_pixel_size(cfg.pixel_size, videos)
    rank_zero_info(f"Pixel size: {f'{pixel_size:g} µm' if pixel_size else 'unknown (sizes in pixels only)'} ({pixel_source})")
    rows, fits = [], []
    truths = tracking_truths(cfg.get("tracking_gt"), videos)
    tracking: dict[str, dict] = {}
    for condition, path in videos.items():
        r, f = vid.analyse_video(
            module, path, str(condition), cfg.frame_interval, out_dir, data_hp.get("normalization") or {},
            pixel_size, module.hparams.threshold, sizes["min_size"], sizes["min_distance"],
            sizes["max_distance"], options.max_gap, options.min_track_fraction, cfg.batch_size,
            options.get("overlay_video", True), options.get("area_weight", 0.0), options.get("splitting", False),
            sizes["seed_threshold"], sizes["seeds"], sizes["unseeded"], sizes["split_fraction"],
        )
        rows += r
        fits += f
        if str(condition) in truths:
            tracking[str(condition)] = score_tracking(out_dir / "tracks" / str(condition) / "ctc", truths[str(condition)])
            rank_zero_info(f"{condition}: " + ", ".join(f"{k} {v:.3f}" for k, v in tracking[str(condition)].items()
                                                         if isinstance(v, float)))
    names = [str(c) for c in videos]
    conditions = vid.summarise_conditions(names, fits)
    for row in conditions:  # Cell Tracking Challenge scores beside the fits, where a ground truth was given
        row.update({k: v for k, v in tracking.get(row["condition"], {}).items() if k in ("TRA", "DET", "SEG")})
    vid.write_csv(out_dir / "cells.csv", rows, vid.CELL_COLUMNS)
    vid.write_csv(out_dir / "fits.csv", fits, vid.FIT_COLUMNS)
    vid.write_csv(out_dir / "conditions.csv", conditions,
                  vid.CONDITION_COLUMNS + [k for k in ("TRA", "DET", "SEG") if any(k in c for c in conditions)])
    vid.plot_results(out_dir, names, rows, fits, pixel_size)
    return {"kind": "video", "videos": {str(k): str(v) for k, v in videos.items()}, "frame_interval_s": cfg.frame_interval,
            "pixel_size_um": pixel_size, "pixel_size_source": pixel_source, "object_sizes": sizes, "conditions": conditions,
            "tracking": tracking,
            "n_fitted_cells": len(fits)}


def tracking_truths(given, videos: dict) -> dict[str, Path]:
    """``tracking_gt=``: one Cell Tracking Challenge ground truth folder (one video) or ``{condition: folder}``,
    each checked for the CTC layout (``TRA/man_track.txt`` and one ``TRA/man_trackTTT.tif`` per frame).

    Raises:
        ValueError: a condition that is not among the videos. ImageReadError: a folder in another layout.
    """
    if not given:
        return {}
    if isinstance(given, (str, Path)):
        if len(videos) != 1:
            raise ValueError("tracking_gt=<folder> names one ground truth, but there are several videos: give "
                             "tracking_gt={CONDITION:folder,...}")
        given = {str(next(iter(videos))): given}
    truths = {}
    for condition, folder in dict(given).items():
        if str(condition) not in {str(c) for c in videos}:
            raise ValueError(f"tracking_gt: {condition!r} is not one of the videos ({', '.join(map(str, videos))})")
        folder = Path(folder)
        if folder.name == "TRA" and (folder / "man_track.txt").is_file():  # the TRA folder itself: its parent is the GT
            folder = folder.parent
        masks = sorted((folder / "TRA").glob("man_track*.tif"))
        if not (folder / "TRA" / "man_track.txt").is_file() or not masks:
            raise ImageReadError(f"{folder}: not a Cell Tracking Challenge ground truth (expected TRA/man_track.txt and "
                                 "TRA/man_trackTTT.tif, one per frame; SEG/man_segTTT.tif optional)")
        truths[str(condition)] = folder
    return truths


def score_tracking(result: Path, truth: Path) -> dict[str, Any]:
    """TRA, DET (and SEG when the ground truth has SEG masks) of a CTC result by py-ctcmetrics.

    Raises:
        ImageReadError: the ground truth does not have one TRA mask per frame of the result.
    """
    import contextlib
    import io

    from ctc_metrics import evaluate_sequence

    frames = len(list(result.glob("mask*.tif")))
    truth_frames = len(list((truth / "TRA").glob("man_track*.tif")))
    if frames != truth_frames:
        raise ImageReadError(f"{truth}: {truth_frames} ground-truth frames (TRA/man_trackTTT.tif) for a video of "
                             f"{frames} frames")
    metrics = ["TRA", "DET"] + (["SEG"] if list((truth / "SEG").glob("man_seg*.tif")) else [])
    with contextlib.redirect_stdout(io.StringIO()):  # py-ctcmetrics prints its progress
        scores = evaluate_sequence(str(result), str(truth), metrics, threads=1)
    return {**{k: float(scores[k]) for k in metrics if scores.get(k) is not None}, "ground_truth": str(truth)}


def conditions_pixel_size(given: float | None, videos: dict[str, str]) -> tuple[float | None, str]:
    """The pixel size of all videos and where it came from: ``pixel_size=`` (overrides the files), or the files'
    OME / ImageJ metadata, which must agree across conditions.

    Raises:
        ValueError: ``pixel_size`` <= 0. ImageReadError: videos (or frames) recording different pixel sizes.
    """
    if given is not None:
        return check_pixel_size(given), "pixel_size= on the command line"
    size = agreed_pixel_size({str(path): vid.video_pixel_size(path) for path in videos.values()}, "the conditions' videos")
    if size is None:
        return None, "no pixel size in the videos' metadata; give pixel_size=<µm per pixel>"
    return size, "the videos' TIFF metadata"


def evaluate_segmenter(cfg: DictConfig, module, checkpoint: dict, out_dir: Path, device, started: float) -> dict[str, Any]:
    """Score a segmentation checkpoint on images (``input=`` or its split) or analyse ``videos=``; writes
    ``summary.json`` and a report (images)."""
    errors = None  # the report's account of unmatched cells, when there are true cells to match
    label = checkpoint_label(cfg.ckpt_path)
    if cfg.videos:
        save_config(cfg, out_dir / "config_resolved.yaml")
        summary = analyse_videos(cfg, module, checkpoint, out_dir, device)
        report = None
    else:
        samples = new_input_samples(cfg, checkpoint["datamodule_hyper_parameters"], module) if cfg.input else None
        save_config(cfg, out_dir / "config_resolved.yaml")
        summary = evaluate_segmentation(cfg, module, checkpoint, out_dir, device, samples)
        summary["checkpoint"] = label  # the report names it
        summary["input"] = str(cfg.input) if cfg.input else f"{cfg.stage} split of the checkpoint's data"
        judged = verdict(summary["metrics"])
        summary["verdict"] = {k: judged[k] for k in ("line", "losses", "beats_all")}
        if "object_f1" in summary["metrics"].get("model", {}):
            errors = errors_section(summary, summary["_rows"])
        split = ("How touching cells were split", [split_setting(summary["object_sizes"], summary["instances"]) + "."
                                                   + (" The baselines' masks are split the same way." if cfg.baselines
                                                      else "")])
        report = report_segmentation(out_dir, summary, cfg,
                                     [verdict_section(judged)] + ([errors] if errors else []) + [split])
    summary.update(checkpoint=label, output_dir=str(out_dir),
                   duration_s=round(time.time() - started, 1))
    write_json(out_dir / "summary.json", summary)
    if report is not None:
        print_outcome(judged, out_dir, report, tuple(errors[1]) if errors else ())
    else:
        rank_zero_info(f"Evaluation written to {out_dir}")
    return summary
