"""Object matching, instance splitting, tracking, curve fits, video reading, segmentation evaluation."""

import csv
from pathlib import Path

import imageio.v2 as iio2
import numpy as np
import pytest
import tifffile

from stainless.metrics.objects import instances_from_mask, match_objects
from stainless.video import fit_shrinking, measure, read_frames, shrink_model, track


def test_matching_on_hand_made_labels():
    true = np.zeros((20, 20), int)
    true[0:5, 0:5] = 1  # matched exactly
    true[10:15, 10:15] = 2  # matched with IoU 0.6
    true[0:4, 15:19] = 3  # missed
    pred = np.zeros((20, 20), int)
    pred[0:5, 0:5] = 7
    pred[10:15, 11:16] = 8  # 20 px overlap of 30 px union: 0.667... no: 4x5=20, union 30
    pred[16:19, 0:3] = 9  # spurious
    result = match_objects(true, pred, thresholds=(0.5, 0.7))
    assert result["by_threshold"][0.5] == {"tp": 2, "fp": 1, "fn": 1, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3}
    assert result["by_threshold"][0.7]["tp"] == 1
    assert result["missed"] == [3] and result["spurious"] == [9]
    assert (2, 8, pytest.approx(20 / 30)) in [(a, b, v) for a, b, v in result["pairs"]]


def test_matching_is_one_to_one():
    true = np.zeros((10, 20), int)
    true[:, :10], true[:, 10:] = 1, 2
    pred = np.ones((10, 20), int)  # one blob covering both
    result = match_objects(true, pred, thresholds=(0.4,))
    assert result["by_threshold"][0.4]["tp"] == 1 and result["by_threshold"][0.4]["fn"] == 1


def test_watershed_splits_touching_discs():
    yy, xx = np.mgrid[0:40, 0:60]
    mask = ((yy - 20) ** 2 + (xx - 18) ** 2 < 100) | ((yy - 20) ** 2 + (xx - 36) ** 2 < 100)
    labels = instances_from_mask(mask, min_size=5, min_distance=5)
    assert labels.max() == 2 and (labels > 0).sum() == mask.sum()


def _dets(positions):
    return [[{"y": float(y), "x": float(x), "area": 1.0} for y, x in frame] for frame in positions]


def test_tracking_keeps_identities_through_a_missed_frame():
    a = [(10 + t, 10) for t in range(6)]
    b = [(40, 40 + t) for t in range(6)]
    frames = [[a[t], b[t]] for t in range(6)]
    frames[3] = [b[3]]  # cell a missed in frame 3
    frames[5].append((70, 5))  # a new cell enters
    tracked = track(_dets(frames), max_distance=5, max_gap=2)
    ids_a = {d["cell"] for frame in tracked for d in frame if d["x"] == 10}
    ids_b = {d["cell"] for frame in tracked for d in frame if d["y"] == 40}
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b
    assert tracked[5][-1]["cell"] not in ids_a | ids_b


def test_curve_fit_recovers_a_known_time_constant():
    t = np.arange(0, 80, 1.0)
    areas = shrink_model(t, 500, 17.0, 0.65) + np.random.default_rng(0).normal(0, 2, t.size)
    fit = fit_shrinking(t, areas)
    assert fit["tau"] == pytest.approx(17.0, rel=0.05) and fit["final_fraction"] == pytest.approx(0.65, abs=0.02)
    assert fit["r2"] > 0.98


def test_measurements_of_a_disc():
    yy, xx = np.mgrid[0:50, 0:50]
    labels = (((yy - 25) ** 2 + (xx - 25) ** 2) < 15**2).astype(int)
    (row,) = measure(labels, pixel_size=0.5)
    assert row["area"] == pytest.approx(np.pi * 15**2, rel=0.03) and row["area"] == labels.sum()  # pixels
    assert row["area_um2"] == pytest.approx(row["area"] * 0.25)  # beside them, µm²
    assert row["equivalent_diameter"] == pytest.approx(30.0, rel=0.03) and row["equivalent_diameter_um"] == pytest.approx(
        row["equivalent_diameter"] * 0.5)
    assert row["perimeter_um"] == pytest.approx(row["perimeter"] * 0.5)
    assert 0.85 < row["circularity"] <= 1.1
    (unknown,) = measure(labels, pixel_size=None)
    assert unknown["area"] == row["area"] and unknown["area_um2"] is None


@pytest.mark.parametrize("dtype", [np.uint16, np.int64])
def test_measurements_are_regionprops_to_the_last_bit(dtype):
    """Touching cells, a cell with a hole, cells cut by the image edge, one-pixel cells, ids with gaps: every value
    equals scikit-image's regionprops (area, centroid, 4-connected perimeter, equivalent diameter)."""
    from skimage.measure import regionprops

    rng = np.random.default_rng(3)
    labels = (rng.integers(0, 5, (37, 45)) * 1000).astype(dtype)  # speckled, touching, holes, ids 1000..4000
    labels[10:30, 5:25] = 7  # a square with a hole
    labels[15:20, 10:15] = 0
    labels[0:6, 40:45] = 9  # on the corner
    rows = measure(labels, pixel_size=None)
    regions = regionprops(labels)
    assert [r["label"] for r in rows] == [r.label for r in regions] and len(rows) == 6
    for row, region in zip(rows, regions):
        assert (row["y"], row["x"]) == tuple(float(c) for c in region.centroid)
        assert row["area"] == region.area and row["perimeter"] == region.perimeter
        assert row["equivalent_diameter"] == region.equivalent_diameter_area
    assert measure(np.zeros((5, 5), dtype), 1.0) == []


@pytest.mark.parametrize("top", [9, 2**16 + 20])  # uint16 labels, and labels beyond uint16
def test_overlay_outlines_are_scikit_image_boundaries(top):
    from skimage.segmentation import find_boundaries

    from stainless.video.export import _overlay, outlines

    labels = np.zeros((40, 50), np.int64)
    labels[2:20, 3:25] = top  # touching the next one
    labels[2:20, 25:40] = top - 2**16 if top > 2**16 else top - 1  # the same label as `top` if cut to 16 bits
    labels[25:40, 30:50] = top - 2  # at the image border
    labels[30:33, 5:8] = 1
    assert np.array_equal(outlines(labels), find_boundaries(labels))
    frame = np.random.default_rng(0).uniform(0, 100, (1, 40, 50)).astype(np.float32)
    rgb = _overlay(frame, labels, [])
    assert rgb.shape == (40, 50, 3) and rgb.dtype == np.uint8
    assert (rgb[find_boundaries(labels)] == (255, 200, 0)).all()


def test_video_reading_from_mp4_tiff_and_folder(tmp_path):
    frames = np.stack([np.full((32, 48), 20 * i + 10, np.uint8) for i in range(5)])
    tifffile.imwrite(tmp_path / "v.tif", frames)
    assert read_frames(tmp_path / "v.tif").shape == (5, 1, 32, 48)
    with iio2.get_writer(tmp_path / "v.mp4", format="FFMPEG", fps=5, macro_block_size=1) as writer:
        for f in frames:
            writer.append_data(np.repeat(f[..., None], 3, -1))
    video = read_frames(tmp_path / "v.mp4")
    assert video.shape[0] == 5 and video.shape[-2:] == (32, 48)
    assert np.allclose(video[:, 0].mean((1, 2)), frames.mean((1, 2)), atol=3)  # lossy codec
    (tmp_path / "frames").mkdir()
    for i, f in enumerate(frames):
        iio2.imwrite(tmp_path / "frames" / f"{i:03d}.png", f)
    assert read_frames(tmp_path / "frames").shape == (5, 1, 32, 48)


@pytest.mark.slow  # trains: left out of `make mutate`, run by `make test`
def test_segmentation_evaluate_and_video_round_trip(cfg_train, cfg_eval, tmp_path, monkeypatch):
    from stainless.evaluate import evaluate
    from stainless.train import train

    cfg = cfg_train(
        "experiment=rbc_segmentation", "data.synthetic.n_frames=6", "data.synthetic.n_labelme=6",
        "data.synthetic.size=64", "+data.synthetic.video_frames=6", "+data.synthetic.video_cells=2",
        "+data.synthetic.cells_per_frame=3", "data.patch_size=64", "data.batch_size=2",
    )
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    # the report's sentence on the image holding most errors is given every image's scores (see test_core_units)
    monkeypatch.setattr("stainless.evaluation.segmentation.worst_image", lambda rows: f"worst_image: {len(rows)} rows")
    summary = evaluate(cfg_eval(f"ckpt_path={ckpt}", "report=markdown"))
    out = Path(summary["output_dir"])
    assert summary["kind"] == "segmentation" and "0.5" in summary["objects_by_iou"]
    n_rows = len((out / "metrics.csv").read_text().splitlines()) - 1
    assert n_rows > 1 and f"worst_image: {n_rows} rows" in (out / "report.md").read_text()
    assert set(summary["iou_by_threshold"]) >= {"0.3", "0.5", "0.7"}
    assert (out / "metrics.csv").read_text().startswith("image,method,iou,dice,precision,recall,object_f1")
    assert list((out / "overlays").glob("*.png")) and (out / "report.md").is_file()
    # every cell unmatched at IoU 0.5 is given one cause, summed over the model's images only (not the baselines')
    errors, at50 = summary["object_errors"], summary["objects_by_iou"]["0.5"]
    assert sum(v for k, v in errors.items() if k.startswith("missed_")) == at50["fn"]
    assert sum(v for k, v in errors.items() if k.startswith("spurious_")) == at50["fp"]
    rows = [r for r in csv.DictReader((out / "metrics.csv").open()) if r["method"] == "model"]
    assert {k: sum(int(r[k]) for r in rows) for k in errors} == errors
    assert f"{at50['fn']} true cells were missed: {errors['missed_merged']} merged" in (out / "report.md").read_text()
    videos = Path(cfg.paths.data_dir) / "synthetic_rbc" / "videos"
    vsum = evaluate(cfg_eval(f"ckpt_path={ckpt}", f"videos={{A:{videos / 'UREA.tif'}}}", "frame_interval=2.0",
                             "pixel_size=0.5", run="video"))
    vout = Path(vsum["output_dir"])
    for name in ("cells.csv", "fits.csv", "conditions.csv", "area_vs_time.png", "tau_by_condition.png",
                 "initial_area_by_condition.png"):
        assert (vout / name).is_file(), name
    assert list(vout.glob("A_overlay.*"))
    header = (vout / "cells.csv").read_text().splitlines()[0]
    assert header == ("condition,time_s,label,y,x,area,perimeter,equivalent_diameter,circularity,cell,frame,parent,"
                      "area_um2,perimeter_um,equivalent_diameter_um")
