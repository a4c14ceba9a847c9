"""Exact values of the small pure functions the results rest on: object sizes and post-processing, mask splitting,
instance targets and their decoding, average precision, and the shrink fit with its per-condition summary.
Written against `make mutate`'s survivors: each assertion pins a value a plausible slip would change."""

from __future__ import annotations

import numpy as np
import pytest

from stainless.data.instances import check_mode, instance_target, object_diameters, objects_of, scale_summary
from stainless.metrics.objects import (
    DEFAULT_SIZES,
    decode_instances,
    instances_from_mask,
    iou_matrix,
    match_objects,
    object_errors,
    mean_average_precision,
    size_parameters,
)
from stainless.video.fit import fit_shrinking, shrink_model, summarise_conditions


def _square(size: int = 7, side: int = 5, top: int = 1) -> np.ndarray:
    labels = np.zeros((size, size), np.int64)
    labels[top : top + side, top : top + side] = 1
    return labels


# -- instance targets ------------------------------------------------------------------------------------------------

def test_boundary_target_of_a_square_is_its_outer_ring():
    target = instance_target(_square(), "boundary")
    expected = np.zeros((7, 7), np.float32)
    expected[1:6, 1:6] = 1
    expected[2:5, 2:5] = 0
    assert target.dtype == np.float32 and (target == expected).all()


def test_distance_target_of_a_square_falls_from_one_at_the_centre_to_a_third_on_the_rim():
    target = instance_target(_square(), "distance")
    assert target.dtype == np.float32
    assert target[3, 3] == pytest.approx(1.0)  # 2 px inside the rim + 1, over the peak 3
    assert target[2, 2] == pytest.approx(2 / 3) and target[2, 3] == pytest.approx(2 / 3)
    assert target[1, 1] == pytest.approx(1 / 3) and target[1, 3] == pytest.approx(1 / 3)
    assert target[0].max() == 0 and target[:, 0].max() == 0


def test_distance_target_normalises_each_object_by_its_own_peak():
    labels = np.zeros((12, 24), np.int64)
    labels[1:6, 1:6] = 1  # small: peak 3
    labels[1:10, 8:17] = 2  # large: peak 5
    target = instance_target(labels, "distance")
    assert target[3, 3] == pytest.approx(1.0) and target[5, 12] == pytest.approx(1.0)
    assert target[1, 3] == pytest.approx(1 / 3) and target[1, 12] == pytest.approx(1 / 5)
    assert instance_target(np.zeros((4, 4), np.int64), "distance").max() == 0


def test_instance_modes_are_checked():
    assert check_mode("boundary") == "boundary"
    with pytest.raises(ValueError, match=r"model.instances='rims': use one of none, boundary, distance"):
        check_mode("rims")
    with pytest.raises(ValueError, match="has no instance map"):
        instance_target(_square(), "none")


def test_objects_come_from_labels_else_the_four_connected_components_of_the_mask():
    labels = _square()
    assert objects_of(labels, np.zeros((7, 7))) is not None and (objects_of(labels, np.zeros((7, 7))) == labels).all()
    diagonal = np.eye(3, dtype=np.int64)  # three pixels touching only by corners: three objects
    assert objects_of(None, diagonal).max() == 3
    assert objects_of(None, np.zeros((3, 3))).max() == 0


# -- splitting and decoding -----------------------------------------------------------------------------------------

def _two_disks(shape=(40, 70), centres=((20, 20), (20, 45)), radius=9) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.any([np.hypot(yy - y, xx - x) < radius for y, x in centres], axis=0)


def test_watershed_splits_two_overlapping_disks_along_their_neck():
    mask = _two_disks(centres=((20, 20), (20, 34)))
    labels = instances_from_mask(mask, min_size=20, min_distance=5)
    assert labels.dtype == np.int32 and set(np.unique(labels)) == {0, 1, 2}
    assert ((labels > 0) == mask).all()
    left, right = labels[20, 12], labels[20, 42]
    assert left != right and (labels[:, :26][mask[:, :26]] == left).all() and (labels[:, 29:][mask[:, 29:]] == right).all()


def test_distance_to_background_equals_scipy_bit_for_bit():
    # the watershed's ties fall by exact equality of distances, so the fast transform must reproduce scipy's exactly
    from scipy import ndimage as ndi

    from stainless.metrics.objects import _distance_to_background

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:90, :120]
    mask = np.any([np.hypot(yy - y, xx - x) < r for y, x, r in zip(rng.integers(0, 90, 25), rng.integers(0, 120, 25),
                                                                   rng.integers(3, 20, 25))], axis=0)
    assert 0.2 < mask.mean() < 0.9
    assert np.array_equal(_distance_to_background(mask), ndi.distance_transform_edt(mask))
    full = np.ones((6, 9), bool)  # no background pixel: the same as scipy there too
    assert np.array_equal(_distance_to_background(full), ndi.distance_transform_edt(full))


def test_peaks_per_component_equal_scikit_image_peak_local_max(monkeypatch):
    # the seeds of the distance watershed: the fast path must give scikit-image's peaks, in its order, exactly
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max

    import stainless.metrics.objects as objects

    calls = []
    monkeypatch.setattr(objects, "peak_local_max", lambda *a, **kw: calls.append(1) or peak_local_max(*a, **kw))
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:70, :90]
    components_seen = 0
    for trial in range(40):
        k = int(rng.integers(1, 30))
        disks = np.hypot(yy[..., None] - rng.integers(0, 70, k), xx[..., None] - rng.integers(0, 90, k)) < rng.integers(2, 15, k)
        mask = disks.any(-1)
        mask[:: int(rng.integers(3, 12))] = trial % 3 == 0  # every third: stripes cut it into many close components
        mask[rng.integers(0, 60):, rng.integers(0, 80):][:6, :9] |= trial % 4 == 1  # a rectangle: a plateau ridge
        distance = objects._distance_to_background(mask)
        components, n = ndi.label(mask)
        components_seen += n
        for min_distance in (1, 3, 7, 12):
            expected = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
            assert np.array_equal(objects._peaks_per_component(distance, components, n, min_distance), expected)
    assert components_seen > 300
    # no background at all (a field inside a confluent sheet): scikit-image's peaks too
    full = np.ones((12, 17), bool)
    components, n = ndi.label(full)
    distance = objects._distance_to_background(full)
    for min_distance in (1, 3):
        expected = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
        assert np.array_equal(objects._peaks_per_component(distance, components, n, min_distance), expected)
    # cells apart, as in a video frame: every component settled by the fast path, scikit-image not called
    calls.clear()
    yy, xx = np.mgrid[:80, :100]
    grid = np.any([np.hypot(yy - 12 - 27 * y, xx - 12 - 25 * x) < 7 + y for y, x in np.ndindex(3, 4)], axis=0)
    components, n = ndi.label(grid)
    peaks = objects._peaks_per_component(objects._distance_to_background(grid), components, n, 5)
    assert n == 12 and len(peaks) == 12 and not calls


def test_components_without_a_seed_keep_their_own_labels(monkeypatch):
    import stainless.metrics.objects as objects

    mask = np.zeros((30, 40), bool)
    mask[2:10, 2:10] = mask[15:25, 5:12] = mask[3:12, 25:35] = True  # three separate squares
    found = objects._peaks_per_component
    # a seed in the right square only (peak finding gives every component one, but a split must not rely on it)
    monkeypatch.setattr(objects, "_peaks_per_component", lambda *args: found(*args)[[1]])
    labels = objects.instances_from_mask(mask, min_size=4, min_distance=3)
    assert labels.dtype == np.int32 and ((labels > 0) == mask).all()
    assert labels[7, 30] == 1 and labels[5, 5] == 2 and labels[20, 8] == 3  # the unseeded, after the seed, in order
    assert len(np.unique(labels[2:10, 2:10])) == 1 and len(np.unique(labels[3:12, 25:35])) == 1


def test_min_size_drops_small_objects_and_keeps_those_of_exactly_min_size():
    mask = np.zeros((20, 40), bool)
    mask[2:7, 2:7] = True  # 25 px
    mask[10:14, 20:24] = True  # 16 px
    mask[2:3, 30:32] = True  # 2 px
    kept = instances_from_mask(mask, min_size=25, min_distance=3)
    assert kept.max() == 1 and kept[4, 4] == 1 and kept[12, 22] == 0
    assert instances_from_mask(mask, min_size=16, min_distance=3).max() == 2
    assert instances_from_mask(mask, min_size=1, min_distance=3).max() == 3  # min_size 1: nothing dropped
    assert instances_from_mask(np.zeros((5, 5), bool), 1, 3).shape == (5, 5)


def test_objects_touching_the_border_are_kept():
    mask = np.zeros((20, 20), bool)
    mask[0:6, 0:6] = True
    mask[14:20, 14:20] = True
    labels = instances_from_mask(mask, min_size=4, min_distance=3)
    assert labels.max() == 2 and labels[0, 0] > 0 and labels[19, 19] > 0 and labels[0, 0] != labels[19, 19]


def test_decode_with_a_boundary_map_grows_seeds_to_the_whole_mask():
    labels = np.zeros((12, 24), np.int64)
    labels[2:10, 2:11] = 1
    labels[2:10, 11:20] = 2  # touching along column 10/11
    maps = np.stack([(labels > 0).astype(np.float32), instance_target(labels, "boundary")])
    decoded = decode_instances(maps, "boundary", threshold=0.5, min_size=4, min_distance=2)
    assert decoded.dtype == np.int32 and ((decoded > 0) == (labels > 0)).all()
    assert decoded[5, 5] != decoded[5, 15] and len(np.unique(decoded[labels == 1])) == 1
    assert match_objects(labels, decoded)["by_threshold"][0.5]["tp"] == 2


def test_decode_thresholds_the_foreground_and_the_seeds_where_told():
    labels = _square(9, 7)
    fg = (labels > 0) * 0.6
    maps = np.stack([fg, instance_target(labels, "distance")]).astype(np.float32)
    assert decode_instances(maps, "distance", threshold=0.5, min_size=4).max() == 1
    assert decode_instances(maps, "distance", threshold=0.7, min_size=4).max() == 0  # foreground below the threshold
    assert decode_instances(maps, "distance", threshold=0.5, min_size=50).max() == 0  # 49 px < min_size
    assert decode_instances(maps, "distance", threshold=0.5, min_size=49).max() == 1
    # no seed above the seed threshold: the foreground still comes out as one object
    assert decode_instances(maps, "distance", threshold=0.5, min_size=4, seed_threshold=1.5).max() == 1
    with pytest.raises(ValueError, match="instances='rims'"):
        decode_instances(maps, "rims")
    assert decode_instances(maps[:1], "distance", 0.5, 4, 2).max() == 1  # no map: the mask's watershed
    assert decode_instances(maps[0], "none", 0.5, 4, 2).max() == 1  # a plain (H, W) probability


# -- sizes and scores -----------------------------------------------------------------------------------------------

def test_object_diameters_are_equivalent_disks_of_each_label():
    labels = np.zeros((10, 10), np.int64)
    labels[0:2, 0:2] = 1  # 4 px
    labels[5:8, 5:8] = 3  # 9 px; label 2 absent
    assert object_diameters(labels) == pytest.approx([np.sqrt(16 / np.pi), np.sqrt(36 / np.pi)])


def test_scale_summary_is_the_percentiles_and_count():
    assert scale_summary(np.array([])) is None
    diameters = np.arange(1.0, 101.0)
    summary = scale_summary(diameters)
    assert summary == {"diameter_median": 50.5, "diameter_p5": pytest.approx(5.95), "diameter_p95": pytest.approx(95.05),
                       "n_objects": 100}


def test_size_parameters_derive_from_the_recorded_scale():
    recorded = {"diameter_median": 20.0, "diameter_p5": 10.0, "diameter_p95": 30.0, "n_objects": 7}
    sizes = size_parameters({}, recorded)
    # min_size: a disk half as wide as the 5th percentile, pi/4 * 5^2 = 19.6 -> 20; split 0.3 x 20 = 6; radius 20
    assert (sizes["min_size"], sizes["min_distance"], sizes["max_distance"], sizes["diameter"]) == (20, 6, 20.0, 20.0)
    assert sizes["source"] == "the training annotations (7 objects, diameter 5-95%: 10.0-30.0 px)"
    given = size_parameters({"diameter": 10}, recorded)  # p5 taken as 0.7 x 10: pi/4 * 3.5^2 = 9.6 -> 10
    assert (given["min_size"], given["min_distance"], given["max_distance"]) == (10, 3, 10.0)
    tiny = size_parameters({"diameter": 2}, None)  # floors: min_size >= 4, min_distance >= 2
    assert (tiny["min_size"], tiny["min_distance"]) == (4, 2)
    assert size_parameters({"min_size": 55, "min_distance": None}, recorded)["min_size"] == 55
    assert size_parameters({"min_distance": None}, recorded)["min_distance"] == 6  # None is auto
    defaults = size_parameters({}, None)
    assert {k: defaults[k] for k in DEFAULT_SIZES} == DEFAULT_SIZES and defaults["diameter"] is None


@pytest.mark.parametrize("key", ["diameter", "min_size", "min_distance", "max_distance"])
@pytest.mark.parametrize("value", [0, -2, True, "big"])
def test_size_parameters_refuse_non_positive_or_non_numbers(key, value):
    with pytest.raises(ValueError, match=rf"segmentation.{key}={value!r}: must be auto or a positive number"):
        size_parameters({key: value}, None)


def test_size_parameters_accept_attribute_style_options():
    class Options:
        diameter = 30
        min_size = "auto"

    assert size_parameters(Options(), None)["min_distance"] == 9


def test_mean_average_precision_is_the_mean_of_tp_over_all():
    by_threshold = {0.5: {"tp": 3, "fp": 1, "fn": 0}, 0.75: {"tp": 1, "fp": 3, "fn": 2}, 0.9: {"tp": 0, "fp": 0, "fn": 0}}
    assert mean_average_precision(by_threshold) == pytest.approx((3 / 4 + 1 / 6 + 1.0) / 3)
    assert np.isnan(mean_average_precision({}))


def test_iou_matrix_and_matching_counts():
    true = np.zeros((6, 10), np.int64)
    true[0:3, 0:3] = 4  # 9 px
    true[0:3, 5:8] = 7  # 9 px
    pred = np.zeros((6, 10), np.int64)
    pred[0:3, 0:2] = 1  # 6 px inside true 4: IoU 6/9
    pred[4:6, 8:10] = 2  # nowhere
    iou, true_ids, pred_ids = iou_matrix(true, pred)
    assert list(true_ids) == [4, 7] and list(pred_ids) == [1, 2]
    assert iou == pytest.approx(np.array([[6 / 9, 0], [0, 0]]))
    result = match_objects(true, pred, thresholds=(0.5, 0.7))
    assert result["pairs"] == [(4, 1, pytest.approx(6 / 9))]
    assert result["by_threshold"][0.5] == {"tp": 1, "fp": 1, "fn": 1, "precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert result["by_threshold"][0.7] == {"tp": 0, "fp": 2, "fn": 2, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert (result["missed"], result["spurious"], result["n_true"], result["n_pred"]) == ([7], [2], 2, 2)
    empty = match_objects(np.zeros((3, 3), int), np.zeros((3, 3), int), thresholds=(0.5,))
    assert empty["by_threshold"][0.5] == {"tp": 0, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert iou_matrix(true, np.zeros_like(pred))[0].shape == (2, 0)


def test_each_unmatched_object_gets_its_cause():
    true = np.zeros((40, 60), np.int64)
    true[0:10, 0:10], true[0:10, 10:20], true[0:10, 20:30] = 1, 2, 3  # three touching cells...
    pred = np.zeros_like(true)
    pred[0:10, 0:30] = 1  # ...merged into one prediction: IoU 1/3 with each
    true[15:24, 0:9] = 4
    pred[15:24, 0:3], pred[15:24, 3:6], pred[15:24, 6:9] = 2, 3, 4  # cut in thirds
    true[15:25, 20:30] = 5  # not predicted at all
    true[30:40, 0:10] = 6
    pred[30:35, 0:5] = 5  # a quarter of it: found, IoU 0.25
    true[30:40, 20:30], pred[30:40, 20:30] = 7, 6  # right
    pred[30:36, 50:56] = 7  # on background
    pred[15:20, 40:45] = 8  # a fifth of it on true cell 8, which it covers a sixth of: background, not found
    true[15:20, 44:50] = 8
    true[0:4, 40:44], pred[0:8, 40:48] = 9, 9  # all of it under a prediction four times its size: outlined poorly
    matched = match_objects(true, pred)
    assert object_errors(true, pred, matched) == {
        "missed_merged": 3, "missed_split": 1, "missed_not_found": 2, "missed_outlined_poorly": 2,
        "spurious_background": 3, "spurious_on_cells": 5}  # the merge, the three thirds, the quarter
    assert object_errors(true, true, match_objects(true, true)) == dict.fromkeys(object_errors(true, pred, matched), 0)


# -- shrink fits -----------------------------------------------------------------------------------------------------

def test_shrink_model_values():
    t = np.array([0.0, 10.0, 1e6])
    assert shrink_model(t, 100.0, 10.0, 0.6) == pytest.approx([100.0, 100 * (0.6 + 0.4 / np.e), 60.0])


def test_fit_recovers_exact_parameters_from_any_start_time():
    t = np.arange(100.0, 160.0, 2.0)  # starts at 100 s: the fit measures time from the first frame
    areas = shrink_model(t - 100.0, 400.0, 12.0, 0.7)
    fit = fit_shrinking(t, areas)
    assert fit["a0"] == pytest.approx(400.0, rel=1e-4) and fit["tau"] == pytest.approx(12.0, rel=1e-4)
    assert fit["final_fraction"] == pytest.approx(0.7, rel=1e-4) and fit["r2"] == pytest.approx(1.0, abs=1e-8)
    assert set(fit) == {"a0", "tau", "final_fraction", "r2"} and all(isinstance(v, float) for v in fit.values())


def test_fit_needs_five_points_and_says_nan_otherwise():
    t = np.arange(4.0)
    assert all(np.isnan(v) for v in fit_shrinking(t, shrink_model(t, 100, 2, 0.5)).values())
    t = np.arange(5.0)
    assert np.isfinite(fit_shrinking(t, shrink_model(t, 100, 2, 0.5))["tau"])
    assert np.isnan(fit_shrinking(t, np.array([1.0, np.nan, 1.0, 1.0, 1.0]))["tau"])  # cannot be fitted


def test_fit_r2_is_below_one_with_noise():
    t = np.arange(0.0, 60.0)
    areas = shrink_model(t, 300.0, 10.0, 0.5) + np.random.default_rng(1).normal(0, 5, t.size)
    fit = fit_shrinking(t, areas)
    residual = areas - shrink_model(t, fit["a0"], fit["tau"], fit["final_fraction"])
    assert fit["r2"] == pytest.approx(1 - residual.var() / areas.var()) and 0.9 < fit["r2"] < 1


def test_conditions_summarise_finite_fits_of_their_own_cells():
    fits = [{"condition": "A", "tau": tau, "final_fraction": f} for tau, f in ((1, 0.5), (2, 0.6), (3, 0.7), (4, 0.9))]
    fits += [{"condition": "A", "tau": np.nan, "final_fraction": 0.1}, {"condition": "B", "tau": 100, "final_fraction": 1}]
    a, c = summarise_conditions(["A", "C"], fits)
    assert a == {"condition": "A", "n_cells": 4, "tau_median": 2.5, "tau_q25": 1.75, "tau_q75": 3.25,
                 "final_fraction_median": pytest.approx(0.65)}
    assert c["condition"] == "C" and c["n_cells"] == 0
    assert all(np.isnan(c[k]) for k in ("tau_median", "tau_q25", "tau_q75", "final_fraction_median"))


# -- tracking --------------------------------------------------------------------------------------------------------

def _walk(step: float, n: int = 5, area: float | None = 100.0) -> list[list[dict]]:
    cells = [[{"y": 20.0, "x": 10.0 + step * t, "label": 1}] for t in range(n)]
    if area is not None:
        for frame in cells:
            frame[0]["area"] = area
    return cells


def test_links_longer_than_max_distance_are_not_made():
    from stainless.video import track

    far = track(_walk(6.0), max_distance=5, max_gap=0)  # 6 px a frame: 36 > 25
    assert len({c["cell"] for frame in far for c in frame}) == 5
    near = track(_walk(6.0, area=None), max_distance=7, max_gap=0)  # 36 < 49; no area recorded is fine
    assert {c["cell"] for frame in near for c in frame} == {1}
    assert all(c["parent"] == 0 and c["frame"] == t for t, frame in enumerate(near) for c in frame)
    assert track([[], []]) == [[], []]


def test_without_gap_closing_a_missed_frame_starts_a_new_track():
    from stainless.video import track

    frames = _walk(1.0)
    frames[2] = []
    assert len({c["cell"] for frame in track(frames, max_distance=5, max_gap=0) for c in frame}) == 2
    frames = _walk(1.0)
    frames[2] = []
    assert len({c["cell"] for frame in track(frames, max_distance=5, max_gap=1) for c in frame}) == 1


@pytest.mark.parametrize("kept", [0, 1])
def test_the_area_term_follows_whichever_candidate_kept_its_size(kept):
    from stainless.video import track

    frames = [[{"y": 20.0, "x": 20.0, "area": 400.0}],
              [{"y": 20.0, "x": 26.0, "area": 100.0}, {"y": 20.0, "x": 14.0, "area": 100.0}]]
    frames[1][kept]["area"] = 390.0
    tracked = track(frames, max_distance=10, max_gap=0, area_weight=3.0)
    assert tracked[1][kept]["cell"] == tracked[0][0]["cell"] != tracked[1][1 - kept]["cell"]


def test_without_splitting_a_division_records_no_parent():
    from stainless.video import track

    frames = [[(30, 30)], [(30, 31)], [(26, 31), (34, 31)], [(24, 31), (36, 31)]]
    detections = [[{"y": float(y), "x": float(x), "area": 50.0} for y, x in f] for f in frames]
    tracked = track(detections, max_distance=6, max_gap=0, splitting=False)
    assert all(c["parent"] == 0 for frame in tracked for c in frame)
    assert len({c["cell"] for c in tracked[3]}) == 2


def test_track_tables_carry_areas_in_um2_and_labels_grow_to_32_bits(tmp_path):
    import csv

    import tifffile

    from stainless.video import TrackOutputs, write_track_tables

    rows = [{"cell": 2, "frame": 1, "time_s": 2.0, "y": 1.0, "x": 2.0, "area": 8.0, "area_um2": 2.0, "parent": 0},
            {"cell": 2, "frame": 0, "time_s": 0.0, "y": 1.0, "x": 1.0, "area": 9.0, "area_um2": 2.25, "parent": 0}]
    write_track_tables(tmp_path / "t", rows)
    write_track_tables(tmp_path / "t", rows)  # the folder may exist
    table = list(csv.DictReader(open(tmp_path / "t" / "tracks.csv")))  # noqa: SIM115
    assert [(r["frame"], r["area_um2"]) for r in table] == [("0", "2.25"), ("1", "2.0")]
    labels = np.zeros((4, 4), np.int32)
    labels[1:3, 1:3] = 1
    for top, dtype in ((65535, np.uint16), (70000, np.uint32)):
        folder = tmp_path / str(top)
        folder.mkdir()
        outputs = TrackOutputs(folder, [[{"label": 1, "cell": top}], [{"label": 1, "cell": 1}]], (4, 4), None)
        assert (outputs.write(0, labels) == labels * top).all()
        outputs.write(1, labels)
        outputs.close()
        with tifffile.TiffFile(folder / "labels.tif") as tif:
            assert tif.series[0].axes == "TYX" and tif.series[0].dtype == dtype
            assert tif.asarray()[0].max() == top and tif.asarray()[1].max() == 1
    single = TrackOutputs(tmp_path, [[{"label": 1, "cell": 3}]], (4, 4), None)  # a one-frame video, 4 px wide
    single.write(0, labels)
    single.close()
    assert tifffile.imread(tmp_path / "labels.tif").max() == 3
    empty = TrackOutputs(tmp_path / "65535", [[]], (4, 4), None)
    assert empty.dtype == np.uint16
    empty.close()


# -- tiling and image metrics ------------------------------------------------------------------------------------------

def _sin2(size: int) -> np.ndarray:
    return np.maximum(np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2, 1e-3)


def test_blend_window_is_the_outer_product_of_squared_sines():
    from stainless.inference.tiling import blend_window

    window = blend_window(8)
    assert window.shape == (8, 8)
    assert window.numpy() == pytest.approx(np.outer(_sin2(8), _sin2(8)), rel=1e-5)
    assert blend_window(2000).min().item() == pytest.approx(1e-6)  # the floor: 1e-3 per axis


def test_overlapping_tiles_are_averaged_with_the_blend_weights():
    import torch

    from stainless.data.datasets import grid_starts
    from stainless.inference.tiling import predict_tiled

    image = torch.zeros(1, 16, 24)
    calls = []

    def constant_per_tile(batch):  # tile k predicts the constant k + 1: the output is a weighted mean of them
        out = torch.stack([torch.full((1, *batch.shape[-2:]), float(len(calls) * 2 + i + 1)) for i in range(len(batch))])
        calls.append(len(batch))
        return out

    result = predict_tiled(constant_per_tile, image, tile_size=8, overlap=0.5, batch_size=2)[0].numpy()
    rows, cols = grid_starts(16, 8, 4), grid_starts(24, 8, 4)
    numerator, denominator = np.zeros((16, 24)), np.zeros((16, 24))
    window = np.outer(_sin2(8), _sin2(8))
    for k, (t, l) in enumerate((t, l) for t in rows for l in cols):
        numerator[t : t + 8, l : l + 8] += window * (k + 1)
        denominator[t : t + 8, l : l + 8] += window
    assert result == pytest.approx(numerator / denominator, rel=1e-4)
    n = len(rows) * len(cols)
    assert calls == [2] * (n // 2) + [1] * (n % 2)  # batch_size tiles per call


def test_padding_reflects_when_it_can_and_replicates_otherwise():
    import torch
    import torch.nn.functional as F

    from stainless.inference.tiling import _pad

    image = torch.arange(35.0).reshape(1, 5, 7)
    assert _pad(image, 5, 7) is image and _pad(image, 4, 6) is image  # nothing to add
    assert torch.equal(_pad(image, 8, 7), F.pad(image[None], (0, 0, 0, 3), mode="reflect")[0])
    assert torch.equal(_pad(image, 5, 9), F.pad(image[None], (0, 2, 0, 0), mode="reflect")[0])
    assert torch.equal(_pad(image, 10, 7), F.pad(image[None], (0, 0, 0, 5), mode="replicate")[0])  # 5 >= 5 rows
    assert torch.equal(_pad(image, 5, 14), F.pad(image[None], (0, 7, 0, 0), mode="replicate")[0])  # 7 >= 7 columns


def test_pearson_is_per_image_and_zero_for_a_constant_image():
    import torch

    from stainless.metrics.image import pearson_per_image

    rng = np.random.default_rng(0)
    a, b = rng.random((2, 16, 16)), rng.random((2, 16, 16))
    b[1] += 5  # a different mean in the second image must not leak into the first
    r = pearson_per_image(torch.from_numpy(a)[:, None], torch.from_numpy(b)[:, None]).numpy()
    assert r == pytest.approx([np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1] for i in range(2)], abs=1e-6)
    flat = pearson_per_image(torch.ones(1, 1, 4, 4) * 0.3, torch.rand(1, 1, 4, 4))
    assert flat.item() == 0.0
    tiny = torch.tensor([[0.0, 1e-4, 0.0, 1e-4]])  # tiny but real variation still counts
    assert pearson_per_image(tiny, tiny).item() == pytest.approx(1.0)


# -- edges the mutants found --------------------------------------------------------------------------------------------

def test_a_one_pixel_wide_object_is_all_rim_and_all_peak():
    labels = np.zeros((5, 9), np.int64)
    labels[2, 1:8] = 1
    assert (instance_target(labels, "boundary")[2, 1:8] == 1).all()
    assert (instance_target(labels, "distance")[2, 1:8] == 1).all()


def test_a_seed_smaller_than_min_size_makes_no_object_of_its_own():
    labels = np.zeros((14, 22), np.int64)
    labels[2:10, 2:10] = 1  # 64 px
    labels[3:9, 10:16] = 2  # a 36 px bud touching it, its core 16 px
    maps = np.stack([(labels > 0).astype(np.float32), instance_target(labels, "boundary")])
    two = decode_instances(maps, "boundary", threshold=0.5, min_size=10, min_distance=2)
    assert two.max() == 2 and two[5, 5] != two[5, 13]
    one = decode_instances(maps, "boundary", threshold=0.5, min_size=20, min_distance=2)
    assert one.max() == 1 and one[5, 13] == one[5, 5] == 1  # the speck's pixels join the object around it
    specks = np.stack([(labels > 0).astype(np.float32), np.zeros(labels.shape, np.float32)])
    specks[1, ::2, ::2] = 1  # a distance map of isolated specks: no seed survives, the mask stays one object
    assert decode_instances(specks, "distance", threshold=0.5, min_size=10).max() == 1


def test_thresholds_are_strict():
    maps = np.full((2, 6, 6), 0.5, np.float32)  # probability exactly at the threshold: background
    assert decode_instances(maps, "distance", threshold=0.5, min_size=1).max() == 0
    assert decode_instances(maps[0], "none", threshold=0.5, min_size=1).max() == 0
    half = np.zeros((4, 4), np.int64)
    half[0:2, 0:2] = 1  # 4 px
    pred = np.zeros((4, 4), np.int64)
    pred[0:1, 0:2] = 1  # 2 px inside: IoU exactly 0.5 counts as a match at 0.5
    assert match_objects(half, pred, thresholds=(0.5,))["by_threshold"][0.5]["tp"] == 1
    assert match_objects(half, pred)["missed"] == []
    dot = np.zeros((3, 3), np.int64)
    dot[1, 1] = 1  # a one-pixel object matched by itself: IoU 1
    assert iou_matrix(dot, dot)[0] == pytest.approx(np.ones((1, 1)))
    assert mean_average_precision({0.5: {"tp": 1, "fp": 1, "fn": 2}}) == pytest.approx(0.25)


def test_a_fit_that_fails_gives_every_key_as_nan_and_r2_holds_for_small_areas():
    nan = fit_shrinking(np.arange(3.0), np.ones(3))
    assert set(nan) == {"a0", "tau", "final_fraction", "r2"} and all(np.isnan(v) for v in nan.values())
    t = np.arange(0.0, 30.0)
    areas = shrink_model(t, 0.5, 5.0, 0.6) + np.random.default_rng(2).normal(0, 0.005, t.size)  # variance << 1
    fit = fit_shrinking(t, areas)
    residual = areas - shrink_model(t, fit["a0"], fit["tau"], fit["final_fraction"])
    assert fit["r2"] == pytest.approx(1 - residual.var() / areas.var()) and fit["r2"] > 0.9


def test_metric_maps_are_per_pixel_channel_means():
    import torch

    from stainless.metrics.image import ImageMetrics, image_maps, per_image_metrics

    rng = np.random.default_rng(3)
    # low contrast (0.40-0.45): a data range inferred from the data (about 0.1) would differ from the fixed 1.0
    target = torch.from_numpy(rng.uniform(0.40, 0.45, (2, 2, 24, 24)).astype(np.float32))
    pred = target + torch.from_numpy(rng.normal(0, 0.01, (2, 2, 24, 24)).astype(np.float32))
    maps = image_maps(pred, target)
    assert set(maps) == {"abs_error", "ssim"} and maps["abs_error"].shape == (2, 1, 24, 24)
    assert torch.allclose(maps["abs_error"], (pred - target).abs().mean(1, keepdim=True))
    assert maps["ssim"].shape == (2, 1, 24, 24)
    reference = [structural_similarity_of(pred[i], target[i]) for i in range(2)]
    rows = per_image_metrics(pred, target)
    assert [r["ssim"] for r in rows] == pytest.approx(reference, abs=5e-3)
    # the SSIM map is the local similarity whose valid-region mean is the image's SSIM
    assert [float(maps["ssim"][i, 0, 5:-5, 5:-5].mean()) for i in range(2)] == pytest.approx(reference, abs=5e-3)
    collection = ImageMetrics()
    collection.update(pred, target)
    assert float(collection.compute()["ssim"]) == pytest.approx(np.mean(reference), abs=5e-3)
    assert set(collection.compute()) == {"mse", "mae", "psnr", "ssim", "pearson"}


def structural_similarity_of(pred, target) -> float:
    """scikit-image's SSIM (Gaussian 11-px window, sigma 1.5, data range 1), averaged over channels."""
    from skimage.metrics import structural_similarity

    return float(np.mean([structural_similarity(t.numpy(), p.numpy(), data_range=1.0, gaussian_weights=True, sigma=1.5,
                                                use_sample_covariance=False, win_size=11)
                          for p, t in zip(pred, target)]))


def test_the_report_names_the_setting_for_the_dominant_error():
    from stainless.evaluation.segmentation import errors_section

    def lines(instances="distance", seeds="threshold", merged=3, background=1, unseeded="keep", chosen=False):
        errors = {"missed_merged": merged, "missed_split": 1, "missed_not_found": 1, "missed_outlined_poorly": 1,
                  "spurious_background": background, "spurious_on_cells": 2}
        split = {"unseeded_f1": {"keep": 0.8, "drop": 0.7}} if chosen else {}  # unseeded=auto tuned the rule
        return errors_section({"object_errors": errors, "instances": instances, "threshold": 0.5,
                               "object_sizes": {"seeds": seeds, "unseeded": unseeded, "split": split}})[1]

    assert lines()[0].startswith("At IoU 0.5, 6 true cells were missed: 3 merged with a neighbour")
    assert "segmentation.seeds=hmaxima" in lines()[1] and len(lines()) == 2
    assert "model.instances=distance" in lines(instances="none")[1] and "round nuclei" in lines(instances="none")[1]
    assert "smaller segmentation.seed_threshold" in lines(seeds="hmaxima")[1]
    assert "smaller segmentation.min_distance" in lines(seeds="shape")[1]  # this rule's split setting
    assert len(lines(merged=2)) == 1  # merges are 2 of 5 misses: no advice
    assert "segmentation.unseeded=drop" in lines(merged=0, background=2)[1]
    assert "foreground threshold (0.5)" in lines(merged=0, background=2, chosen=True)[1]  # validation kept: no drop
    assert "foreground threshold (0.5)" in lines(merged=0, background=2, unseeded="drop")[1]
    assert "foreground threshold (0.5)" in lines(merged=0, background=2, instances="none")[1]


def test_the_report_names_the_image_that_holds_most_errors():
    from stainless.evaluation.segmentation import errors_section, worst_image

    def row(name, n_true, missed, spurious, method="model"):
        tp = n_true - missed
        return {"image": name, "method": method, "n_true": n_true, "missed": missed, "spurious": spurious,
                "object_f1": 2 * tp / (2 * tp + missed + spurious)}

    # one field of four holds 10 of 40 true cells and 30 of the 40 unmatched: named, with the others pooled
    rows = [row("a", 10, 2, 2), row("b", 10, 1, 2), row("c", 10, 2, 1), row("odd", 10, 10, 20),
            row("odd", 10, 0, 0, method="baseline_otsu")]  # baselines are not the model's errors
    line = worst_image(rows)
    assert line.startswith("30 of the 40 unmatched cells (10 missed, 20 invented) are in one image of 4, odd, "
                           "which holds 10 of the 40 true cells: object F1 0.00 there, 0.83 on the others pooled")
    summary = {"object_errors": {"missed_merged": 0, "missed_split": 0, "missed_not_found": 15,
                                 "missed_outlined_poorly": 0, "spurious_background": 0, "spurious_on_cells": 25},
               "instances": "none", "threshold": 0.5, "object_sizes": {"seeds": "threshold", "split": {}}}
    assert errors_section(summary, rows)[1][-1] == line and line not in errors_section(summary)[1]
    # errors in proportion to the cells: a field with half the cells and half the errors is not singled out
    assert worst_image([row("a", 5, 1, 1), row("b", 5, 1, 1), row("big", 10, 2, 2)]) is None
    # a third of the errors, but not twice the field's share of the cells: not named
    assert worst_image([row("a", 10, 2, 2), row("b", 10, 2, 2), row("c", 10, 2, 2), row("d", 20, 4, 2)]) is None
    assert worst_image(rows[2:4]) is None  # two images: too few to single one out
    assert worst_image([row("a", 10, 0, 0), row("b", 10, 0, 0), row("c", 10, 0, 0)]) is None  # nothing unmatched
