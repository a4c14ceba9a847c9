"""Tracking by laptrack, and tracks leaving as files others read: napari CSV, label stacks and Cell Tracking
Challenge results scored by py-ctcmetrics."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from stainless.evaluation.segmentation import score_tracking, tracking_truths
from stainless.io import ImageReadError, pixel_size, write_ctc
from stainless.video import TrackOutputs, count_frames, iter_frames, track, write_track_tables


def _dets(positions, area=100.0):
    return [[{"y": float(y), "x": float(x), "area": area, "label": i + 1} for i, (y, x) in enumerate(frame)]
            for frame in positions]


def test_laptrack_keeps_a_cell_through_a_two_frame_gap():
    a = [(10 + t, 10) for t in range(8)]
    b = [(40, 40 + t) for t in range(8)]
    frames = [[a[t], b[t]] for t in range(8)]
    frames[3], frames[4] = [b[3]], [b[4]]  # cell a missed in frames 3 and 4
    tracked = track(_dets(frames), max_distance=5, max_gap=2)
    ids_a = {d["cell"] for frame in tracked for d in frame if d["x"] == 10}
    ids_b = {d["cell"] for frame in tracked for d in frame if d["y"] == 40}
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b  # bridged: a 2-frame gap, max_gap=2
    tracked = track(_dets(frames), max_distance=5, max_gap=1)
    assert len({d["cell"] for frame in tracked for d in frame if d["x"] == 10}) == 2  # too long a gap for max_gap=1


def test_area_change_enters_the_cost_when_weighted():
    """Two candidates at the same distance: by distance alone the tracker cannot tell, with the area it can."""
    frames = [[(20, 20)], [(20, 26), (20, 14)]]
    detections = _dets(frames)
    detections[0][0]["area"] = 400.0
    detections[1][0]["area"], detections[1][1]["area"] = 100.0, 390.0  # the left one kept its size
    tracked = track(detections, max_distance=10, max_gap=0, area_weight=3.0)
    assert tracked[1][1]["cell"] == tracked[0][0]["cell"] != tracked[1][0]["cell"]


# one cell, then its two daughters moving apart
_DIVIDING = [[(30, 30)], [(30, 31)], [(26, 31), (34, 31)], [(24, 31), (36, 31)]]


def test_splitting_records_the_parent():
    tracked = track(_dets(_DIVIDING), max_distance=6, max_gap=0, splitting=True)
    mother = tracked[0][0]["cell"]
    daughters = {d["cell"] for d in tracked[3]}
    assert len(daughters) == 2 and mother not in daughters
    assert all(d["parent"] == mother for d in tracked[3])
    assert tracked[0][0]["parent"] == tracked[1][0]["parent"] == 0  # the mother has none


def test_a_division_reaches_the_ctc_lineage(tmp_path):
    tracked = track(_dets(_DIVIDING), max_distance=6, max_gap=0, splitting=True)
    yy, xx = np.mgrid[:64, :64]
    outputs = TrackOutputs(tmp_path, tracked, (64, 64), None)
    for t, cells in enumerate(tracked):
        outputs.write(t, sum((np.hypot(yy - c["y"], xx - c["x"]) < 2) * c["label"] for c in cells).astype(np.int32))
    outputs.close()
    mother, daughters = tracked[0][0]["cell"], sorted(d["cell"] for d in tracked[3])
    lines = sorted((tmp_path / "ctc" / "res_track.txt").read_text().strip().split("\n"))
    assert lines == sorted([f"{mother} 0 1 0", *(f"{d} 2 3 {mother}" for d in daughters)])  # L B E P


def _moving_disks(n_frames=6, size=48):
    yy, xx = np.mgrid[:size, :size]
    stack = np.zeros((n_frames, size, size), np.uint16)
    for t in range(n_frames):
        stack[t][(yy - 12 - t) ** 2 + (xx - 12) ** 2 < 25] = 1
        if t != 2:  # the second cell is missed in frame 2
            stack[t][(yy - 34) ** 2 + (xx - 30 - t) ** 2 < 25] = 2
    return stack


def test_ctc_export_scores_one_against_itself_and_cuts_gaps(tmp_path):
    stack = _moving_disks()
    write_ctc(tmp_path / "res", stack)
    write_ctc(tmp_path / "gt" / "TRA", stack, None, "man_track", "man_track.txt")
    (tmp_path / "gt" / "SEG").mkdir()
    for t, frame in enumerate(stack):
        tifffile.imwrite(tmp_path / "gt" / "SEG" / f"man_seg{t:03d}.tif", frame)
    lines = sorted((tmp_path / "res" / "res_track.txt").read_text().split("\n"))[1:]
    assert lines == ["1 0 5 0", "2 0 1 0", "3 3 5 2"]  # cell 2 missed in frame 2: a new label, parent 2
    scores = score_tracking(tmp_path / "res", tmp_path / "gt")
    assert scores["TRA"] == pytest.approx(1.0) and scores["DET"] == pytest.approx(1.0) and scores["SEG"] == pytest.approx(1.0)
    moved = stack.copy()
    moved[moved == 2] = 0  # a result that lost a cell scores lower
    write_ctc(tmp_path / "worse", moved)
    assert score_tracking(tmp_path / "worse", tmp_path / "gt")["TRA"] < 0.9


def test_track_files_for_napari_and_ctc(tmp_path):
    stack = _moving_disks()
    detections = []
    from skimage.measure import regionprops
    for frame in stack:
        detections.append([{"label": r.label, "y": r.centroid[0], "x": r.centroid[1], "area": float(r.area)}
                           for r in regionprops(frame.astype(int))])
    track(detections, max_distance=5, max_gap=2)
    rows = [{**d, "time_s": d["frame"] * 2.0} for cells in detections for d in cells]
    folder = tmp_path / "tracks" / "A"
    write_track_tables(folder, rows)
    outputs = TrackOutputs(folder, detections, stack.shape[1:], 0.5)
    for t, frame in enumerate(stack):
        outputs.write(t, frame.astype(np.int32))
    outputs.close()
    napari = np.loadtxt(folder / "tracks_napari.csv", delimiter=",", skiprows=1)
    assert napari.shape == (len(rows), 4) and len(np.unique(napari[:, 0])) == 2  # track_id, t, y, x
    labels = tifffile.imread(folder / "labels.tif")
    assert labels.shape == stack.shape and set(np.unique(labels)) == {0, 1, 2}
    assert pixel_size(folder / "labels.tif") == pytest.approx(0.5)
    with tifffile.TiffFile(folder / "labels.tif") as tif:  # both axes calibrated, in µm, for napari and Fiji
        ome = tif.ome_metadata
    for key in ('PhysicalSizeX="0.5"', 'PhysicalSizeY="0.5"', 'PhysicalSizeXUnit="µm"', 'PhysicalSizeYUnit="µm"'):
        assert key in ome, key
    assert (folder / "ctc" / "res_track.txt").is_file() and len(list((folder / "ctc").glob("mask*.tif"))) == 6
    write_ctc(tmp_path / "gt" / "TRA", stack, None, "man_track", "man_track.txt")
    assert score_tracking(folder / "ctc", tmp_path / "gt")["TRA"] == pytest.approx(1.0)
    header = (folder / "tracks.csv").read_text().splitlines()[0]
    assert header == "track_id,frame,time_s,y,x,area,area_um2,parent"


def test_frames_are_decoded_one_at_a_time(tmp_path, monkeypatch):
    """The reader streams: taking 3 frames of a 40-frame TIFF decodes 3 pages, not 40."""
    tifffile.imwrite(tmp_path / "v.tif", np.zeros((40, 16, 16), np.uint8), metadata={"axes": "TYX"})
    decoded = []
    original = tifffile.TiffPage.asarray
    monkeypatch.setattr(tifffile.TiffPage, "asarray", lambda self, *a, **k: decoded.append(1) or original(self, *a, **k))
    frames = iter_frames(tmp_path / "v.tif")
    first = [next(frames) for _ in range(3)]
    assert len(decoded) == 3 and first[0].shape == (1, 16, 16)
    assert count_frames(tmp_path / "v.tif") == 40


def test_a_corrupt_frame_is_named(tmp_path):
    (tmp_path / "frames").mkdir()
    for t in range(4):
        tifffile.imwrite(tmp_path / "frames" / f"f{t}.tif", np.zeros((16, 16), np.uint8))
    (tmp_path / "frames" / "f2.tif").write_bytes(b"II*\x00broken")
    frames = iter_frames(tmp_path / "frames")
    next(frames), next(frames)
    with pytest.raises(ImageReadError, match=r"f2\.tif: cannot decode image"):
        next(frames)


def test_frames_of_a_folder_come_in_time_order_whatever_the_padding(tmp_path):
    """frame_2 before frame_10 (a plain name sort scrambles unpadded time-lapses); zero-padded CTC names as before."""
    for name, times in (("unpadded", [f"frame_{t}.tif" for t in range(12)]), ("ctc", [f"t{t:03d}.tif" for t in range(12)])):
        (tmp_path / name).mkdir()
        for t, file in enumerate(times):
            tifffile.imwrite(tmp_path / name / file, np.full((4, 4), t, np.uint8))
        assert [int(frame[0, 0, 0]) for frame in iter_frames(tmp_path / name)] == list(range(12)), name


def test_a_tracking_ground_truth_in_the_wrong_layout_is_named(tmp_path):
    (tmp_path / "gt").mkdir()
    with pytest.raises(ImageReadError, match=r"gt: not a Cell Tracking Challenge ground truth"):
        tracking_truths(str(tmp_path / "gt"), {"A": "a.tif"})
    with pytest.raises(ValueError, match="'B' is not one of the videos"):
        tracking_truths({"B": str(tmp_path / "gt")}, {"A": "a.tif"})
    write_ctc(tmp_path / "short" / "TRA", _moving_disks(3), None, "man_track", "man_track.txt")
    # the TRA folder itself names its ground truth (users point at the folder that holds man_track.txt)
    assert tracking_truths(str(tmp_path / "short" / "TRA"), {"A": "a.tif"}) == {"A": tmp_path / "short"}
    write_ctc(tmp_path / "res", _moving_disks(6))
    with pytest.raises(ImageReadError, match="3 ground-truth frames .* for a video of 6 frames"):
        score_tracking(tmp_path / "res", tmp_path / "short")
