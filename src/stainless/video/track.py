"""Tracking cells across frames with laptrack, and the track files others read (tables, napari, label stacks,
Cell Tracking Challenge results)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from stainless.io import CTCWriter
from stainless.video.export import TRACK_COLUMNS, write_csv


def track(detections: list[list[dict]], max_distance: float = 15.0, max_gap: int = 2, area_weight: float = 0.0,
          splitting: bool = False) -> list[list[dict]]:
    """Link per-frame detections into tracks with laptrack (linear assignment linking, gap closing and, optionally,
    splitting for dividing cells; Jaqaman et al. 2008).

    Cost of a link: the squared distance between centroids, plus (``area_weight`` x the change of sqrt(area))^2
    when ``area_weight`` > 0; links costing more than ``max_distance``^2 are not made. A cell may be missed for up
    to ``max_gap`` frames and keep its identity (laptrack's ``gap_closing_max_frame_count`` is ``max_gap + 1``).
    Cells may enter and leave. Each detection gains ``cell`` (track id, from 1), ``frame`` and ``parent`` (the
    track it split from, 0 for none).
    """
    import networkx as nx
    from laptrack import LapTrack

    if not any(detections):
        return detections
    coords = []
    for frame, cells in enumerate(detections):
        for cell in cells:
            cell["frame"], cell["parent"] = frame, 0
        coords.append(np.array([(c["y"], c["x"], area_weight * np.sqrt(c.get("area", 0.0))) for c in cells],
                               float).reshape(-1, 3))
    cutoff = float(max_distance) ** 2
    tracker = LapTrack(cutoff=cutoff, gap_closing_cutoff=cutoff if max_gap > 0 else False,
                       gap_closing_max_frame_count=max(1, int(max_gap) + 1),
                       splitting_cutoff=cutoff if splitting else False)
    tree = tracker.predict(coords)  # nodes (frame, index in that frame), edges forward in time
    # laptrack's own tree -> table conversion (predict_dataframe / tree_to_dataframe) writes its table one .loc at a
    # time: 1.3 s for 100 frames of 12 cells, most of the video overhead. The same rule, on the graph: a track is a
    # connected piece of the tree once the edges from a dividing cell to its daughters are cut; a daughter's parent
    # is the track that divided. Merging is off, so a node has at most one predecessor.
    pieces = tree.copy()
    divisions = [(node, children) for node in tree.nodes if len(children := list(tree.successors(node))) > 1]
    for node, children in divisions:
        pieces.remove_edges_from((node, child) for child in children)
    track_of = {node: k + 1 for k, nodes in enumerate(nx.connected_components(nx.Graph(pieces))) for node in nodes}
    parents = {track_of[child]: track_of[node] for node, children in divisions for child in children}
    for (frame, j), cell_id in track_of.items():
        cell = detections[frame][j]
        cell["cell"] = cell_id
        cell["parent"] = parents.get(cell_id, 0)
    return detections


def write_track_tables(folder: Path, rows: list[dict]) -> None:
    """``tracks.csv`` (track_id, frame, time_s, y, x, area, area_um2, parent) and ``tracks_napari.csv`` (track_id,
    t, y, x: ``viewer.add_tracks(numpy.loadtxt("tracks_napari.csv", delimiter=",", skiprows=1))``)."""
    folder.mkdir(parents=True, exist_ok=True)
    ordered = sorted(rows, key=lambda r: (r["cell"], r["frame"]))
    write_csv(folder / "tracks.csv", [{"track_id": r["cell"], "frame": r["frame"], "time_s": r["time_s"], "y": r["y"],
                                       "x": r["x"], "area": r["area"], "area_um2": r.get("area_um2"),
                                       "parent": r["parent"]} for r in ordered], TRACK_COLUMNS)
    write_csv(folder / "tracks_napari.csv", [{"track_id": r["cell"], "t": r["frame"], "y": r["y"], "x": r["x"]}
                                             for r in ordered], ["track_id", "t", "y", "x"])


class TrackOutputs:
    """The per-frame files of one condition's tracks, written frame by frame after tracking: ``labels.tif`` (each
    pixel its track id; OME-TIFF with the pixel size, memory-mapped, so nothing grows with the video) and the Cell
    Tracking Challenge result ``ctc/`` (scored by py-ctcmetrics)."""

    def __init__(self, folder: Path, detections: list[list[dict]], shape: tuple[int, int], pixel_size: float | None):
        top = max((c["cell"] for cells in detections for c in cells), default=0)
        self.detections = detections
        self.dtype = np.uint16 if top < 2**16 else np.uint32
        metadata = {"axes": "TYX"} | ({"PhysicalSizeX": pixel_size, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": pixel_size,
                                      "PhysicalSizeYUnit": "µm"} if pixel_size else {})
        frames = max(len(detections), 1)
        # grey, said so: a frame 3 or 4 pixels wide would otherwise be taken for RGB(A) samples
        tifffile.imwrite(folder / "labels.tif", shape=(frames, *shape), dtype=self.dtype, ome=True,
                         photometric="minisblack", metadata=metadata)
        self.stack = tifffile.memmap(folder / "labels.tif").reshape(frames, *shape)  # one frame is stored as (Y, X)
        presence: dict[int, list[int]] = {}
        parents: dict[int, int] = {}
        for t, cells in enumerate(detections):
            for cell in cells:
                presence.setdefault(cell["cell"], []).append(t)
                parents[cell["cell"]] = cell.get("parent", 0)
        self.ctc = CTCWriter(folder / "ctc", presence, len(detections), parents)

    def write(self, t: int, labels: np.ndarray) -> np.ndarray:
        """Frame ``t`` of instance labels -> track ids (returned), into both outputs."""
        lut = np.zeros(int(labels.max(initial=0)) + 1, self.dtype)
        for cell in self.detections[t]:
            lut[cell["label"]] = cell["cell"]
        tracks = lut[labels]
        self.stack[t] = tracks
        self.ctc.write(t, tracks)
        return tracks

    def close(self) -> None:
        self.stack.flush()
        del self.stack
        self.ctc.close()
