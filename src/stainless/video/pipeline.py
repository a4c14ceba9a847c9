"""One video, start to end: segment, split, measure, track, write the tracks and the overlay, fit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from stainless.metrics.objects import decode_instances
from stainless.video.export import _overlay
from stainless.video.fit import fit_shrinking
from stainless.video.measure import in_um, measure
from stainless.video.read import VideoWriter, count_frames, iter_frames
from stainless.video.segment import instance_mode, segment_frames
from stainless.video.track import TrackOutputs, track, write_track_tables


def analyse_video(
    module, path: str | Path, condition: str, frame_interval: float, out_dir: Path, normalization: dict,
    pixel_size: float | None = None, threshold: float = 0.5, min_size: int = 30, min_distance: int = 7,
    max_distance: float = 15.0, max_gap: int = 2, min_track_fraction: float = 0.8, batch_size: int = 8,
    overlay_video: bool = True, area_weight: float = 0.0, splitting: bool = False, seed_threshold: float = 0.5,
    seeds: str = "threshold", unseeded: str = "keep", split_fraction: float | None = None,
) -> tuple[list[dict], list[dict]]:
    """Segment, track, measure and fit one video; returns (rows per cell per frame, fits per cell).

    Streams: frames are read, segmented, split and measured as they arrive, each frame's instance labels parked on
    disk, so memory does not grow with the video's length. After tracking, a second pass writes the condition's
    track files (``tracks/<condition>/``: tables, ``labels.tif``, ``ctc/``) and, with ``overlay_video``,
    ``<condition>_overlay.mp4`` (outlines and track ids), frame by frame.
    """
    import shutil
    import tempfile
    from collections import deque

    instances = instance_mode(module)

    folder = out_dir / "tracks" / condition
    folder.mkdir(parents=True, exist_ok=True)
    parked = Path(tempfile.mkdtemp(prefix=".instances_", dir=folder))
    detections: list[list[dict]] = []
    shape: tuple[int, int] = (0, 0)

    def split_and_measure(maps: np.ndarray, t: int) -> tuple[tuple[int, int], list[dict]]:
        labels = decode_instances(maps, instances, threshold, min_size, min_distance, seed_threshold, seeds, unseeded,
                                  split_fraction)
        np.save(parked / f"{t}.npy", labels)
        return labels.shape, measure(labels, pixel_size)

    def collect(job) -> None:
        nonlocal shape
        shape, cells = job.result()
        detections.append(cells)

    try:
        # The network segments the next batch while a second thread splits, parks and measures the frames already
        # done (numpy, scipy and scikit-image release the GIL in their inner loops); at most two batches wait.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending: deque = deque()
            for t, maps in enumerate(tqdm(segment_frames(module, iter_frames(path), normalization, batch_size),
                                          total=count_frames(path), desc=f"{condition}: frames", unit="frame")):
                pending.append(pool.submit(split_and_measure, maps, t))
                while len(pending) > 2 * batch_size or (pending and pending[0].done()):
                    collect(pending.popleft())
            while pending:
                collect(pending.popleft())
        track(detections, max_distance, max_gap, area_weight, splitting)
        rows = [{"condition": condition, "time_s": d["frame"] * frame_interval, **d} for cells in detections for d in cells]
        write_track_tables(folder, rows)
        outputs = TrackOutputs(folder, detections, shape, pixel_size)
        overlay = (VideoWriter(out_dir / f"{condition}_overlay.mp4", fps=max(1.0, 1.0 / max(frame_interval, 1e-3)))
                   if overlay_video else None)
        frames = iter_frames(path) if overlay_video else None
        try:
            for t in range(len(detections)):
                labels = np.load(parked / f"{t}.npy")
                outputs.write(t, labels)
                if overlay is not None:
                    overlay.append(_overlay(next(frames), labels, detections[t]))
        finally:
            outputs.close()
            if overlay is not None:
                overlay.close()
    finally:
        shutil.rmtree(parked, ignore_errors=True)
    n_frames = len(detections)
    fits = []
    for cell in sorted({r["cell"] for r in rows}):
        series = sorted((r for r in rows if r["cell"] == cell), key=lambda r: r["frame"])
        if len(series) < min_track_fraction * n_frames:
            continue  # cells seen in too few frames (entering, leaving, mis-detected) are not fitted
        fit = fit_shrinking(np.array([r["time_s"] for r in series]), np.array([r["area"] for r in series]))
        fits.append({"condition": condition, "cell": cell, "n_frames": len(series), **fit,
                     "a0_um2": in_um(fit, pixel_size)["a0_um2"] if np.isfinite(fit["a0"]) else None})
    return rows, fits
