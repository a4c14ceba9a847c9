"""Object-level scores: split masks into instances, match predicted to true objects one-to-one by IoU."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from skimage.feature import peak_local_max
from skimage.morphology import h_maxima, h_minima, remove_small_objects
from skimage.segmentation import relabel_sequential, watershed

IOU_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def instances_from_mask(mask: np.ndarray, min_size: int = 20, min_distance: int = 5,
                        split_fraction: float | None = None) -> np.ndarray:
    """Instance labels from a binary mask; touching objects split by a distance-transform watershed.

    Args:
        mask: boolean (H, W) foreground.
        min_size: objects smaller than this (pixels) are dropped.
        min_distance: minimum distance between object centres (pixels); about a cell radius.
        split_fraction: instead, that fraction of the mask's own object diameter (see :func:`split_distance`).
    """
    components, n = ndi.label(np.asarray(mask, bool))
    if min_size > 1:  # remove_small_objects, on the components already labelled (numbered as a new labelling would)
        keep = np.bincount(components.ravel(), minlength=n + 1) >= min_size
        keep[0] = False
        components = (np.cumsum(keep) * keep).astype(components.dtype)[components]
        n = int(keep.sum())
    if n == 0:
        return np.zeros(components.shape, np.int32)
    min_distance = _scaled_distance(components, min_distance, split_fraction)  # the parts just labelled: no relabel
    mask = components > 0
    distance = _distance_to_background(mask)
    peaks = tuple(_peaks_per_component(distance, components, n, min_distance).T)
    seeds = np.bincount(components[peaks], minlength=n + 1)
    if seeds.max() > 1:  # seeds compete for a component: flood from them
        markers = np.zeros(mask.shape, np.int32)
        markers[peaks] = np.arange(1, len(peaks[0]) + 1)
        labels = watershed(-distance, markers, mask=mask)
    else:  # at most one seed per component (cells apart, as in most video frames): the flood would give each seeded
        # component whole to its seed, so label the components directly (the same labels at a third of the cost)
        lut = np.zeros(n + 1, np.int32)
        lut[components[peaks]] = np.arange(1, len(peaks[0]) + 1)
        labels = lut[components]
    return _label_the_rest(labels, components, np.flatnonzero(seeds[1:] == 0) + 1)


def _peaks_per_component(distance: np.ndarray, components: np.ndarray, n: int, min_distance: int) -> np.ndarray:
    """``peak_local_max(distance, min_distance, labels=components, exclude_border=False)`` for a distance map (each
    value the square root of an integer, as :func:`_distance_to_background` gives): the same peaks in the same order
    (component by component, highest first), at a fraction of the cost.

    scikit-image finds the peaks of each component in its own crop and thins them with a k-d tree: about 0.1 ms of
    Python per component whatever its size (3.6 ms of a 256 x 256 video frame of 30 cells, the largest cost of a
    video after the network). Written here because no library does it faster: the maximum of each pixel's window
    over its own component comes for all components at once from two dilations (OpenCV) of the squared distances
    offset by the component's number, counted up and counted down: a window holding only lower (or only higher)
    numbered components beside its own gives the exact value in one of the two. A component whose peak is then one
    pixel (or a plateau narrower than ``min_distance``, which scikit-image thins to its first pixel) is settled; the
    rest (a window among components on both sides, maxima apart) go to scikit-image one by one, as before.
    """
    if n == 0 or not (components == 0).any():  # no component, or no background (the threshold is the minimum, 0)
        return peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
    squared = np.rint(distance * distance)  # exact integers: ties and order as in the distances
    base = float(squared.max()) + 1
    inside = components > 0
    kernel = np.ones((2 * min_distance + 1,) * 2, np.uint8)
    number = components.astype(np.float64)  # offsets below 2**53: exact in float64
    window_max = lambda offset: cv2.dilate(np.where(inside, offset * base + squared, 0.0), kernel,  # noqa: E731
                                           borderType=cv2.BORDER_REPLICATE) - offset * base
    # a window with higher-numbered components gives >= base counted up; with lower-numbered ones, counted down
    own_max = np.minimum(window_max(number), window_max(np.where(inside, n + 1 - number, 0.0)))
    candidate = inside & (squared == own_max)
    if not candidate.any():  # every component among others on both sides
        return peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
    rows, cols = np.nonzero(candidate)
    owner = components[rows, cols]
    # per component, its candidates in raster order: of candidates closer than min_distance, each is in the other's
    # window, so they are equal, and scikit-image's stable sort keeps them in raster order
    order = np.argsort(owner, kind="stable")
    rows, cols, owner = rows[order], cols[order], owner[order]
    first = np.searchsorted(owner, np.arange(1, n + 1))
    count = np.bincount(owner, minlength=n + 1)[1:]
    span = lambda v: (np.maximum.reduceat(v, first[count > 0]), np.minimum.reduceat(v, first[count > 0]))  # noqa: E731
    spread = np.full(n, np.inf)
    (r_hi, r_lo), (c_hi, c_lo) = span(rows), span(cols)
    spread[count > 0] = np.maximum(r_hi - r_lo, c_hi - c_lo)
    # settled: every candidate closer than min_distance (Chebyshev) to the first, which alone survives scikit-image's
    # thinning; not when every pixel is a candidate (its "trivial image" case) or a window met components on both sides
    flat = components.ravel()
    unsettled = np.bincount(flat, weights=(inside & (own_max >= base)).ravel(), minlength=n + 1)[1:] > 0
    settled = (spread < min_distance) & ~unsettled & (count < np.bincount(flat, minlength=n + 1)[1:])
    single = np.stack([rows[np.minimum(first, len(rows) - 1)], cols[np.minimum(first, len(rows) - 1)]], axis=1)
    slices = ndi.find_objects(components) if not settled.all() else []
    out = []
    for k in range(n):
        if settled[k]:
            out.append(single[k:k + 1])
        elif slices[k] is not None:
            roi = slices[k]
            peaks = peak_local_max(distance[roi], min_distance=min_distance, labels=(components[roi] == k + 1).astype(int),
                                   threshold_abs=0.0, exclude_border=False)
            out.append(peaks + [s.start for s in roi])
    return np.vstack(out).astype(np.intp) if out else np.empty((0, 2), np.intp)


def _distance_to_background(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each foreground pixel to the nearest background pixel, equal to scipy's
    ``distance_transform_edt`` bit for bit (so seeds and ties fall as they did) at an eighth of its cost: OpenCV's
    exact transform (float32), rounded back through the squared distance, which is an integer."""
    if mask.all():  # OpenCV needs a background pixel
        return ndi.distance_transform_edt(mask)
    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE).astype(np.float64)
    return np.sqrt(np.rint(distance * distance, out=distance), out=distance)


def _label_the_rest(labels: np.ndarray, components: np.ndarray, unseeded: np.ndarray) -> np.ndarray:
    """The components ``unseeded`` (ids in ``components``, ascending), which no seed reached, keep their own label
    each, numbered after the seeds' labels."""
    if len(unseeded):
        rest = np.zeros(int(components.max()) + 1, np.int32)
        rest[unseeded] = np.arange(1, len(unseeded) + 1) + labels.max()
        labels = labels + rest[components]
    return labels.astype(np.int32, copy=False)


def mask_diameter(mask: np.ndarray, min_size: int = 1, components: np.ndarray | None = None) -> float | None:
    """An image's own object scale: the median equivalent-disk diameter of the mask's connected parts of at least
    ``min_size`` pixels (``None`` when there is none), or of ``components``, those parts already labelled. Touching
    objects count as one part, so it leans large where they touch; tuning weighs that (see :func:`tune_split`)."""
    if components is None:
        components = ndi.label(np.asarray(mask, bool))[0]
    areas = np.bincount(components.ravel())[1:]
    areas = areas[areas >= max(min_size, 1)]
    return float(np.sqrt(4 * np.median(areas) / np.pi)) if len(areas) else None


def split_distance(mask: np.ndarray, min_size: int, min_distance: int, split_fraction: float | None = None) -> int:
    """The ``min_distance`` that splits this mask's touching objects: ``min_distance`` itself, or with
    ``split_fraction`` that fraction of the image's own diameter (:func:`mask_diameter`; at least 2 pixels), for
    fields imaged at another magnification than the training ones (``min_distance`` when the mask has no object)."""
    if split_fraction is None:
        return min_distance
    return _scaled_distance(ndi.label(np.asarray(mask, bool))[0], min_distance, split_fraction, min_size)


def _scaled_distance(components: np.ndarray, min_distance: int, split_fraction: float | None,
                     min_size: int = 1) -> int:
    """:func:`split_distance` of a mask whose parts are labelled already (``components``)."""
    if split_fraction is None:
        return min_distance
    diameter = mask_diameter(None, min_size, components)
    return min_distance if diameter is None else max(2, int(round(split_fraction * diameter)))


def decode_instances(maps: np.ndarray, mode: str = "none", threshold: float = 0.5, min_size: int = 20,
                     min_distance: int = 5, seed_threshold: float = 0.5, seeds: str = "threshold",
                     unseeded: str = "keep", split_fraction: float | None = None) -> np.ndarray:
    """Instance labels from a segmenter's maps: ``maps[0]`` the foreground probability, ``maps[1]`` the learned
    instance map of ``mode`` (``boundary`` probability or normalised ``distance``; see ``stainless.data.instances``).

    ``none``: the thresholded mask split by :func:`instances_from_mask`. ``boundary``: seeds are the connected parts
    of the foreground where the boundary probability is below ``seed_threshold``; ``distance``: where the distance
    map is above it. With ``seeds="hmaxima"`` a seed is instead a peak of the distance map (a trough of the boundary
    map) standing at least ``seed_threshold`` above (below) the saddle to any higher peak (``h_maxima``): relative
    to the peak, not to one level, so two cells whose learned map never dips below a level at their contact still
    get a seed each, and a cell whose map peaks low keeps its own. A seed of a level smaller than ``min_size`` pixels
    is dropped: a noisy map breaks object cores into specks, and a speck cannot be the core of an object (measured on
    DSB 2018: keeping the specks gave 13 predicted objects per true one); an h-maximum is filtered by its depth.
    Seeds grow by a watershed over the boundary map (or the inverted distance) within the mask; parts of the mask
    under ``min_size`` pixels are dropped; parts that no seed reaches (the instance map shows no cell core there:
    texture, a fragment) keep their own label with ``unseeded="keep"`` and are dropped with ``"drop"``. Labels are
    numbered 1..n.

    With ``seeds="shape"`` the seeds come from the mask's shape, as without a head, weighted by the learned map: the
    peaks, at least ``min_distance`` apart, of the distance to background times the map (``1 - boundary``, or the
    distance map), and the seeds grow over that product (``seed_threshold`` is unused; the split setting is
    ``min_distance``). The mask's distance transform parts round objects by their outline; the learned map lowers it
    where annotated objects touch, so a flat contact, which the outline alone does not part, still does.

    With ``split_fraction``, ``min_distance`` (no head, or ``seeds="shape"``) is that fraction of this image's own
    object diameter instead (:func:`split_distance`).
    """
    maps = np.asarray(maps)
    if mode == "none" or maps.ndim == 2 or maps.shape[0] < 2:
        return instances_from_mask((maps if maps.ndim == 2 else maps[0]) > threshold, min_size, min_distance,
                                   split_fraction)
    if mode not in ("boundary", "distance"):
        raise ValueError(f"instances={mode!r}: use none, boundary or distance")
    check_seeds(seeds)
    check_unseeded(unseeded)
    mask = maps[0] > threshold
    if min_size > 1:
        mask = remove_small_objects(mask, max_size=min_size - 1)
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    landscape = maps[1] if mode == "boundary" else -maps[1]
    # the mask's connected parts: where the shape rule's peaks are found, and what keeps the unseeded parts
    components = ndi.label(mask)[0] if seeds == "shape" or unseeded == "keep" else None
    if seeds == "shape":  # the product's peaks, as instances_from_mask seeds the mask's distance transform
        landscape = -_distance_to_background(mask) * np.clip(1 - maps[1] if mode == "boundary" else maps[1], 0, 1)
        spacing = _scaled_distance(components, min_distance, split_fraction)  # parts of at least min_size
        peaks = tuple(peak_local_max(-landscape, min_distance=spacing, labels=components, exclude_border=False).T)
        markers = np.zeros(mask.shape, np.int32)
        markers[peaks] = np.arange(1, len(peaks[0]) + 1)
    elif seeds == "hmaxima":  # outside the mask the map counts as background, so a peak must rise h above it too
        markers = ndi.label(mask & (h_minima(np.where(mask, maps[1], 1.0), seed_threshold) if mode == "boundary"
                                    else h_maxima(np.where(mask, maps[1], 0.0), seed_threshold)).astype(bool))[0]
    else:
        core = (maps[1] < seed_threshold) if mode == "boundary" else (maps[1] > seed_threshold)
        markers = ndi.label(mask & core)[0]
        if min_size > 1:  # specks of a level dropped (an h-maximum is a peak's tip, a few pixels: its depth filters it)
            markers[(np.bincount(markers.ravel()) < min_size)[markers]] = 0
    labels = watershed(landscape, markers, mask=mask)
    if unseeded == "keep":  # the unseeded parts are at least min_size: the mask was filtered
        rest = np.unique(components[(labels == 0) & mask])
        labels = _label_the_rest(labels, components, rest[rest > 0])
    return relabel_sequential(labels)[0].astype(np.int32, copy=False)  # seeds dropped as specks leave gaps


def check_unseeded(unseeded: str, tuned: bool = False) -> str:
    """What becomes of the foreground parts an instance head gives no seed: ``keep`` (objects of their own) or
    ``drop``; with ``tuned``, also ``auto`` (chosen on annotated fields by :func:`tune_split`)."""
    rules = ("auto", *UNSEEDED_RULES) if tuned else UNSEEDED_RULES
    if unseeded not in rules:
        raise ValueError(f"segmentation.unseeded={unseeded!r}: use {', '.join(rules[:-1])} or {rules[-1]}")
    return unseeded


def check_seeds(seeds: str, tuned: bool = False) -> str:
    """The seed rule of an instance head's decoding: ``threshold`` (a level), ``hmaxima`` (a depth) or ``shape``
    (peaks of the mask's distance transform weighted by the map, ``min_distance`` apart); with ``tuned``, also
    ``auto`` (the rule of ``SEED_CHOICES`` with the better object F1 on annotated fields)."""
    rules = ("auto", *SEED_RULES, "shape") if tuned else (*SEED_RULES, "shape")
    if seeds not in rules:
        raise ValueError(f"segmentation.seeds={seeds!r}: use {', '.join(rules[:-1])} or {rules[-1]}")
    return seeds


def split_key(mode: str, seeds: str = "threshold") -> str:
    """The setting that splits touching objects: ``min_distance`` (pixels between seeds: no head, or
    ``seeds="shape"``) or ``seed_threshold`` (a level or depth of an instance head's map)."""
    return "min_distance" if mode == "none" or seeds == "shape" else "seed_threshold"


# seeds=auto: the seed rules tuned on annotated fields, the better object F1 decoding; threshold first: a tie's.
# Validation ranked the two as the test fields did in ten runs of twelve (one tie, one wrong; BENCHMARKS.md, seeds
# from the mask's shape): shape on DSB 2018's round nuclei, threshold on Usiigaci's touching irregular cells
SEED_CHOICES = ("threshold", "shape")
# What becomes of foreground no seed reaches; keep first: the rule a tie goes to (:func:`tune_split`)
UNSEEDED_RULES = ("keep", "drop")
# Candidates of the split setting tuned on annotated validation fields (:func:`tune_split`).
SEED_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # instance heads: seeds where the map passes this
# seeds=hmaxima: peaks standing this far above their saddles (in peak heights: the distance map peaks at 1 in each
# object). Below 0.05 since DSB 2018 (nuclei 10-20 px) chose 0.05, then the smallest, on all three seeds
SEED_DEPTHS = (0.02, 0.03, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
# seed rule -> (its default seed_threshold, the candidates tuning tries): a level, or a depth
SEED_RULES = {"threshold": (0.5, SEED_THRESHOLDS), "hmaxima": (0.2, SEED_DEPTHS)}
# No head: closest centres split apart, in diameters. Not beyond 0.7: on Usiigaci (30 validation cells) 1 and 1.5
# won on validation and lost on the test regions (object F1 0.549 against 0.644 up to 0.7; BENCHMARKS.md)
SPLIT_FRACTIONS = (0.15, 0.2, 0.3, 0.4, 0.5, 0.7)


def tune_split(fields: Sequence[tuple[np.ndarray, np.ndarray]], mode: str, threshold: float, min_size: int,
               candidates: Sequence[float], default: float, seeds: str = "threshold", unseeded: str = "keep",
               image_fractions: Sequence[float] = ()) -> dict:
    """The split setting that parts annotated objects best, as StarDist tunes its thresholds on validation images:
    each candidate decodes every field, and the one with the highest object F1 at IoU 0.5 (true positives, false
    positives and misses pooled over the fields) wins; a tie goes to the candidate nearest ``default``.

    Args:
        fields: ``(maps, true_labels)`` pairs: the model's maps (see :func:`decode_instances`) and the annotated
            instance labels of the same field.
        mode: the model's instance head (``none``, ``boundary``, ``distance``).
        threshold, min_size: the foreground threshold and the smallest object, as in evaluation.
        candidates: values of the split setting (:func:`split_key`): ``min_distance`` (pixels) for ``none`` and
            ``seeds="shape"``, else ``seed_threshold``.
        default: the value used without tuning (for the tie rule and the comparison).
        seeds, unseeded: the seed rule of an instance head and what becomes of unseeded parts (see
            :func:`decode_instances`); ``unseeded="auto"`` tunes each rule and takes the one with the higher F1 (a
            tie keeps): on Usiigaci dropping won on validation and on the test fields in all six runs, on DSB 2018
            keeping won on both in all three (BENCHMARKS.md, instance heads).
        image_fractions: ``min_distance`` only: also try each of these fractions of every field's own object
            diameter (``split_fraction`` of :func:`decode_instances`), for data whose fields differ in
            magnification; a tie goes to the fixed distance, then to the fraction nearest 0.3.

    Returns:
        ``{"key", "value", "fraction" (None: ``value`` pixels for every image), "f1" (of the choice), "default",
        "default_f1", "scores": {candidate: f1} (a per-image candidate as "<fraction> x diameter"), "unseeded"}``;
        with ``auto`` also ``"unseeded_f1": {rule: best F1}``.
    """
    if unseeded == "auto" and mode != "none":
        tuned = {rule: tune_split(fields, mode, threshold, min_size, candidates, default, seeds, rule, image_fractions)
                 for rule in UNSEEDED_RULES}
        best = max(UNSEEDED_RULES, key=lambda rule: tuned[rule]["f1"])  # the first of equals: keep
        return {**tuned[best], "unseeded_f1": {rule: tuned[rule]["f1"] for rule in UNSEEDED_RULES}}
    unseeded = "keep" if mode == "none" else check_unseeded(unseeded)  # no head: no seeds, nothing unseeded
    key = split_key(mode, seeds)
    fractions = tuple(image_fractions) if key == "min_distance" else ()
    settings = [(value, None) for value in dict.fromkeys([*candidates, default])] + [(default, f) for f in fractions]
    scores = {}
    for value, fraction in settings:
        tp = fp = fn = 0
        # the candidate is one of the two split settings; the other is unused by this mode's decoding
        min_distance, seed_threshold = (int(value), 0.5) if key == "min_distance" else (5, float(value))
        for maps, truth in fields:
            labels = decode_instances(maps, mode, threshold, min_size, min_distance, seed_threshold, seeds, unseeded,
                                      fraction)
            counts = match_objects(truth, labels, (0.5,))["by_threshold"][0.5]
            tp, fp, fn = tp + counts["tp"], fp + counts["fp"], fn + counts["fn"]
        scores[value, fraction] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    best = max(scores, key=lambda s: (scores[s], s[1] is None, -abs(s[0] - default) if s[1] is None else -abs(s[1] - 0.3)))
    return {"key": key, "value": best[0], "fraction": best[1], "f1": scores[best], "default": default,
            "default_f1": scores[default, None], "unseeded": unseeded,
            "scores": {(v if f is None else f"{f:g} x diameter"): f1 for (v, f), f1 in scores.items()}}


def overlaps(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixels shared by every true and predicted instance: (intersection T x P, true ids, predicted ids, true areas,
    predicted areas)."""
    true, pred = true.ravel(), pred.ravel()
    true_ids, pred_ids = np.unique(true[true > 0]), np.unique(pred[pred > 0])
    t_index, p_index = np.searchsorted(true_ids, true), np.searchsorted(pred_ids, pred)
    t_area = np.bincount(t_index[true > 0], minlength=len(true_ids))
    p_area = np.bincount(p_index[pred > 0], minlength=len(pred_ids))
    both = (true > 0) & (pred > 0)
    intersection = np.zeros((len(true_ids), len(pred_ids)))
    np.add.at(intersection, (t_index[both], p_index[both]), 1)
    return intersection, true_ids, pred_ids, t_area, p_area


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU between every true and predicted instance: (matrix T x P, true ids, predicted ids)."""
    intersection, true_ids, pred_ids, t_area, p_area = overlaps(true, pred)
    union = t_area[:, None] + p_area[None, :] - intersection
    return intersection / np.maximum(union, 1), true_ids, pred_ids


MISSED_KINDS = ("merged", "split", "not_found", "outlined_poorly")
SPURIOUS_KINDS = ("background", "on_cells")
# the counts of :func:`object_errors`, in this order
OBJECT_ERRORS = (*(f"missed_{k}" for k in MISSED_KINDS), *(f"spurious_{k}" for k in SPURIOUS_KINDS))


def object_errors(true: np.ndarray, pred: np.ndarray, matched: dict) -> dict[str, int]:
    """Why each object unmatched at IoU 0.5 (``matched``: :func:`match_objects` of the same labels) is unmatched.

    Written here: scoring tools count misses and false objects, not their causes. A missed true cell is, in this
    order: ``merged`` when a prediction covering at least half of it covers at least half of another true cell
    too; ``split`` when two or more predictions cover a fifth of it each; ``not_found`` when predictions cover
    less than a fifth of it in all; else ``outlined_poorly`` (found, but no prediction reaches IoU 0.5). A false
    object is ``background`` when at least half of its pixels are background, else ``on_cells`` (a piece of a
    split cell, a merge that matches no cell, an outline off its cell).

    Returns:
        ``{"missed_<kind>": n, ..., "spurious_<kind>": n, ...}``, every kind present (0 when none).
    """
    intersection, true_ids, pred_ids, t_area, p_area = overlaps(true, pred)
    cover = intersection / np.maximum(t_area, 1)[:, None]  # share of each true cell under each prediction
    row, column = {int(i): r for r, i in enumerate(true_ids)}, {int(i): c for c, i in enumerate(pred_ids)}
    counts = dict.fromkeys(OBJECT_ERRORS, 0)
    for true_id in matched["missed"]:
        r = row[true_id]
        covering = np.flatnonzero(cover[r] >= 0.5)
        if any((np.delete(cover[:, c], r) >= 0.5).any() for c in covering):
            kind = "merged"
        elif (cover[r] >= 0.2).sum() >= 2:
            kind = "split"
        elif cover[r].sum() < 0.2:
            kind = "not_found"
        else:
            kind = "outlined_poorly"
        counts[f"missed_{kind}"] += 1
    for pred_id in matched["spurious"]:
        c = column[pred_id]
        counts["spurious_background" if intersection[:, c].sum() * 2 <= p_area[c] else "spurious_on_cells"] += 1
    return counts


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


def mean_average_precision(by_threshold: dict) -> float:
    """The DSB 2018 score: mean over IoU thresholds 0.5..0.95 of TP / (TP + FP + FN) (pooled counts)."""
    values = [s["tp"] / (s["tp"] + s["fp"] + s["fn"]) if s["tp"] + s["fp"] + s["fn"] else 1.0
              for s in by_threshold.values()]
    return float(np.mean(values)) if values else float("nan")


# -- the size of the objects: learned from the annotations, not guessed ------------------------------------------

# Defaults when no object scale is known (an older checkpoint): sized for the synthetic red blood cells.
DEFAULT_SIZES = {"min_size": 30, "min_distance": 7, "max_distance": 15.0}


def size_parameters(options, recorded: dict | None) -> dict:
    """Pixel sizes of the object post-processing: each given setting (a number) wins; ``auto`` derives it from
    ``options["diameter"]`` (a number) or the diameter recorded from the training annotations.

    Derived: ``min_size`` is the area of a disk half as wide as the smallest usual object (5th percentile);
    ``min_distance`` (closest centres of touching objects split apart) 0.3 diameters; ``max_distance`` (largest
    move between frames when tracking) one diameter. Without any scale, the synthetic-cell defaults.

    Returns:
        ``min_size``, ``min_distance``, ``max_distance``, ``diameter`` and ``source`` (where the scale came from).

    Raises:
        ValueError: a diameter or size that is not ``auto`` or a positive number.
    """
    get = options.get if hasattr(options, "get") else lambda k, d=None: getattr(options, k, d)
    diameter = get("diameter", "auto")
    for key in ("diameter", "min_size", "min_distance", "max_distance"):
        value = get(key, "auto")
        if value is not None and value != "auto" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                                     or value <= 0):
            raise ValueError(f"segmentation.{key}={value!r}: must be auto or a positive number of pixels")
    if diameter not in (None, "auto"):
        median, p5, source = float(diameter), 0.7 * float(diameter), f"segmentation.diameter={diameter}"
    elif recorded:
        median, p5 = recorded["diameter_median"], recorded["diameter_p5"]
        source = (f"the training annotations ({recorded['n_objects']} objects, diameter 5-95%: "
                  f"{recorded['diameter_p5']:.1f}-{recorded['diameter_p95']:.1f} px)")
    else:
        median = p5 = None
        source = "defaults (no object scale recorded in the checkpoint; set segmentation.diameter=<pixels>)"
    derived = DEFAULT_SIZES if median is None else {
        "min_size": max(4, int(round(np.pi / 4 * (0.5 * p5) ** 2))), "min_distance": max(2, int(round(0.3 * median))),
        "max_distance": float(round(median, 1))}
    sizes = {key: (get(key, "auto") if get(key, "auto") not in (None, "auto") else value) for key, value in derived.items()}
    sizes["min_size"], sizes["min_distance"] = int(sizes["min_size"]), int(sizes["min_distance"])
    return {**sizes, "diameter": median, "source": source}
