"""Cells over time: segment every frame, split and track cells, measure them, fit their shrinking.

Pipeline: frames -> probability maps (batched) -> instances (watershed) -> tracks -> area(t) per cell ->
exponential-plateau fits -> per-condition summary, CSVs, plots and an overlay video.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import tifffile
import torch
from scipy.optimize import curve_fit, linear_sum_assignment
from skimage.measure import regionprops
from tqdm.auto import tqdm

from stainless.io import IMAGE_SUFFIXES, CTCWriter, ImageReadError, normalize, read_image
from stainless.metrics.objects import instances_from_mask
from stainless.tiling import predict_tiled

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")


def _frame_chw(array: np.ndarray) -> np.ndarray:
    """One frame as float32 (C, H, W): grey (H, W), or colour with the channels last (H, W, <=4) or first."""
    array = np.asarray(array)
    if array.ndim == 2:
        return array[None].astype(np.float32)
    return (np.moveaxis(array, -1, 0) if array.shape[-1] <= 4 else array).astype(np.float32)


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """The frames of a video one at a time, as float32 (C, H, W), decoding each only when it is asked for: a
    multi-page TIFF page by page, a folder image by image, an mp4/avi frame by frame (PyAV, else ffmpeg). Memory
    does not grow with the length of the video.

    Raises:
        ImageReadError: missing or unreadable input, or a frame that cannot be decoded (named by its index).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ImageReadError(f"{path}: no frames (images) in this folder")
        for file in files:
            yield read_image(file)
        return
    if not path.is_file():
        raise ImageReadError(f"{path}: video does not exist")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        yield from _tiff_frames(path)
        return
    if suffix not in VIDEO_SUFFIXES:
        raise ImageReadError(f"{path}: unsupported video format {suffix!r}; use mp4/avi, a TIFF stack or a folder")
    index = 0
    try:
        frames = iio.imiter(path, plugin="pyav") if _has_pyav() else _ffmpeg_frames(path)
        for index, frame in enumerate(frames):
            yield _frame_chw(frame)
    except ImageReadError:
        raise
    except Exception as error:
        raise ImageReadError(f"{path}: cannot read video frame {index} ({type(error).__name__}: {error})") from None


def _tiff_frames(path: Path) -> Iterator[np.ndarray]:
    try:
        tif = tifffile.TiffFile(path)
    except Exception as error:
        raise ImageReadError(f"{path}: cannot read video ({type(error).__name__}: {error})") from None
    with tif:
        series = tif.series[0]
        axes, shape = series.axes, series.shape
        # one page per frame (T/Z/I Y X, with samples per pixel S last): decode page by page
        per_page = len(series.pages) == (shape[0] if len(shape) > 2 and axes[0] in "TZIQ" else 1)
        if not per_page or len(shape) == 2:
            try:
                array = series.asarray()
            except Exception as error:
                raise ImageReadError(f"{path}: cannot read video ({type(error).__name__}: {error})") from None
            frames = array[None] if array.ndim == 2 else array
            for frame in frames:
                yield _frame_chw(frame)
            return
        for index, page in enumerate(series.pages):
            try:
                frame = page.asarray()
            except Exception as error:
                raise ImageReadError(f"{path}: cannot read video frame {index} ({type(error).__name__}: {error})") from None
            yield _frame_chw(frame)


def count_frames(path: str | Path) -> int | None:
    """The number of frames of a video from its header or folder listing; None when only decoding would say."""
    path = Path(path)
    if path.is_dir():
        return sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if path.suffix.lower() in (".tif", ".tiff") and path.is_file():
        try:
            with tifffile.TiffFile(path) as tif:
                shape = tif.series[0].shape
                return shape[0] if len(shape) > 2 and tif.series[0].axes[0] in "TZIQ" else 1
        except Exception:  # an unreadable file is named by iter_frames
            return None
    return None


def read_frames(path: str | Path) -> np.ndarray:
    """All frames of a video as float32 (T, C, H, W) (see :func:`iter_frames`, which streams them instead).

    Raises:
        ImageReadError: missing or unreadable input, named with the reason.
    """
    return np.stack(list(iter_frames(path)))


def _has_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def _ffmpeg_frames(path: Path) -> Iterator[np.ndarray]:
    import imageio.v2 as iio2

    with iio2.get_reader(path, format="FFMPEG") as reader:
        for frame in reader:
            yield np.asarray(frame)


class VideoWriter:
    """RGB uint8 frames appended one at a time to an mp4 (ffmpeg), or to a multi-page TIFF where ffmpeg is not
    available; nothing is held in memory."""

    def __init__(self, path: Path, fps: float = 10.0):
        self.path, self._writer, self._tiff = Path(path), None, None
        try:
            import imageio.v2 as iio2

            self._writer = iio2.get_writer(self.path, format="FFMPEG", fps=fps, macro_block_size=1)
        except Exception:  # no ffmpeg: a TIFF stack instead
            self.path = self.path.with_suffix(".tif")
            self._tiff = tifffile.TiffWriter(self.path)

    def append(self, frame: np.ndarray) -> None:
        if self._writer is not None:
            self._writer.append_data(frame)
        else:
            self._tiff.write(frame, photometric="rgb", contiguous=True)

    def close(self) -> Path:
        (self._writer or self._tiff).close()
        return self.path


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float = 10.0) -> Path:
    """RGB uint8 frames to mp4 (ffmpeg), or to a multi-page TIFF where ffmpeg is unavailable, as they come."""
    writer = VideoWriter(path, fps)
    try:
        for frame in frames:
            writer.append(frame)
    finally:
        path = writer.close()
    return path


@torch.no_grad()
def segment_frames(module, frames: Iterable[np.ndarray], normalization: dict, batch_size: int = 8,
                   tile_size: int = 512) -> Iterator[np.ndarray]:
    """Foreground probability (H, W) of each frame, frames taken from any iterable (a stream) in batches; whole
    frames when they fit a tile, else tiled one by one."""
    import itertools

    device = next(module.parameters()).device
    multiple = module.size_multiple
    frames = iter(frames)
    while batch := list(itertools.islice(frames, batch_size)):
        h, w = batch[0].shape[-2:]
        if max(h, w) > tile_size:
            for frame in batch:
                x = torch.from_numpy(normalize(frame, **normalization)).to(device)
                yield predict_tiled(lambda b: _foreground(module, b)[:, None], x, tile_size, 0.25, batch_size,
                                    multiple)[0].cpu().numpy()
            continue
        ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
        x = torch.from_numpy(np.stack([normalize(f, **normalization) for f in batch])).to(device)
        x = torch.nn.functional.pad(x, (0, pw - w, 0, ph - h), mode="reflect" if ph - h < h and pw - w < w else "replicate")
        yield from _foreground(module, x)[:, :h, :w].cpu().numpy()


def _foreground(module, x: torch.Tensor) -> torch.Tensor:
    probs = module.probabilities(x)
    return probs[:, 0] if probs.shape[1] == 1 else 1 - probs[:, 0]


def measure(labels: np.ndarray, pixel_size: float | None) -> list[dict[str, float | None]]:
    """Area, perimeter, equivalent diameter and circularity of each instance, in pixels and, beside them, in µm
    (``area_um2``, ``perimeter_um``, ``equivalent_diameter_um``: None when the pixel size is unknown)."""
    rows = []
    for region in regionprops(labels):
        perimeter = region.perimeter
        row = {
            "label": int(region.label),
            "y": float(region.centroid[0]), "x": float(region.centroid[1]),
            "area": float(region.area), "perimeter": float(perimeter),
            "equivalent_diameter": float(region.equivalent_diameter_area),
            "circularity": float(4 * np.pi * region.area / perimeter**2) if perimeter > 0 else 0.0,
        }
        row.update(in_um(row, pixel_size))
        rows.append(row)
    return rows


def in_um(row: dict[str, Any], pixel_size: float | None) -> dict[str, float | None]:
    """The ``*_um`` / ``*_um2`` twins of a row's pixel sizes (area, perimeter, equivalent diameter, a0)."""
    out: dict[str, float | None] = {}
    for name, power in (("area", 2), ("perimeter", 1), ("equivalent_diameter", 1), ("a0", 2)):
        if name in row:
            value = row[name]
            out[f"{name}_um{2 if power == 2 else ''}"] = (
                float(value) * pixel_size**power if pixel_size and value is not None else None)
    return out


def video_pixel_size(path: str | Path) -> float | None:
    """µm per pixel recorded in a video's files: an OME / ImageJ TIFF stack, or the frames of a folder (which must
    agree); None for mp4/avi and files without a physical size.

    Raises:
        ImageReadError: an unknown unit, or frames of one folder with different pixel sizes.
    """
    from stainless.io import common_pixel_size, pixel_size

    path = Path(path)
    if path.is_dir():
        return common_pixel_size(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                                 f"the frames of {path}")
    return pixel_size(path) if path.is_file() else None


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
    import pandas as pd
    from laptrack import LapTrack

    rows = []
    for frame, cells in enumerate(detections):
        for j, cell in enumerate(cells):
            cell["frame"], cell["parent"] = frame, 0
            rows.append((frame, j, cell["y"], cell["x"], area_weight * np.sqrt(cell.get("area", 0.0))))
    if not rows:
        return detections
    table = pd.DataFrame(rows, columns=["frame", "j", "y", "x", "size"])
    cutoff = float(max_distance) ** 2
    tracker = LapTrack(cutoff=cutoff, gap_closing_cutoff=cutoff if max_gap > 0 else False,
                       gap_closing_max_frame_count=max(1, int(max_gap) + 1),
                       splitting_cutoff=cutoff if splitting else False)
    tracks, splits, _ = tracker.predict_dataframe(table, ["y", "x", "size"], only_coordinate_cols=False)
    parents = {int(r.child_track_id) + 1: int(r.parent_track_id) + 1 for r in splits.itertuples()} if len(splits) else {}
    for row in tracks.itertuples():
        cell = detections[int(row.frame)][int(row.j)]
        cell["cell"] = int(row.track_id) + 1
        cell["parent"] = parents.get(cell["cell"], 0)
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
        tifffile.imwrite(folder / "labels.tif", shape=(max(len(detections), 1), *shape), dtype=self.dtype, ome=True,
                         metadata=metadata)
        self.stack = tifffile.memmap(folder / "labels.tif")
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


def shrink_model(t: np.ndarray, a0: float, tau: float, fraction: float) -> np.ndarray:
    """A(t) = A0 * (f + (1 - f) * exp(-t / tau)): exponential approach to the plateau f * A0."""
    return a0 * (fraction + (1 - fraction) * np.exp(-t / tau))


def fit_shrinking(times: np.ndarray, areas: np.ndarray) -> dict[str, float]:
    """Least-squares fit of :func:`shrink_model`; NaNs where the curve cannot be fitted."""
    nan = {"a0": np.nan, "tau": np.nan, "final_fraction": np.nan, "r2": np.nan}
    if len(times) < 5:
        return nan
    span = float(times.max() - times.min()) or 1.0
    try:
        (a0, tau, fraction), _ = curve_fit(
            shrink_model, times - times.min(), areas, p0=(areas[0], span / 4, areas[-1] / max(areas[0], 1e-9)),
            bounds=([0, 1e-3, 0], [np.inf, 100 * span, 1.5]), maxfev=10000,
        )
    except (RuntimeError, ValueError):
        return nan
    residual = areas - shrink_model(times - times.min(), a0, tau, fraction)
    r2 = 1 - residual.var() / max(areas.var(), 1e-12)
    return {"a0": float(a0), "tau": float(tau), "final_fraction": float(fraction), "r2": float(r2)}


def _overlay(frame: np.ndarray, labels: np.ndarray, cells: list[dict]) -> np.ndarray:
    """The frame with cell outlines and track ids (centroids from ``measure``: nothing measured twice)."""
    import cv2
    from skimage.segmentation import find_boundaries

    grey = frame[0] if frame.ndim == 3 else frame
    grey = normalize(grey[None], low=0.5, high=99.5)[0]
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, -1)
    rgb[find_boundaries(labels)] = (255, 200, 0)
    for cell in cells:
        y, x = int(cell["y"]), int(cell["x"])
        cv2.putText(rgb, str(cell["cell"]), (x - 6, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 40, 40), 1)
    return rgb


def analyse_video(
    module, path: str | Path, condition: str, frame_interval: float, out_dir: Path, normalization: dict,
    pixel_size: float | None = None, threshold: float = 0.5, min_size: int = 30, min_distance: int = 7,
    max_distance: float = 15.0, max_gap: int = 2, min_track_fraction: float = 0.8, batch_size: int = 8,
    overlay_video: bool = True, area_weight: float = 0.0, splitting: bool = False,
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

    def split_and_measure(probs: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        labels = instances_from_mask(probs > threshold, min_size, min_distance)
        return labels, measure(labels, pixel_size)

    folder = out_dir / "tracks" / condition
    folder.mkdir(parents=True, exist_ok=True)
    parked = Path(tempfile.mkdtemp(prefix=".instances_", dir=folder))
    detections: list[list[dict]] = []
    shape: tuple[int, int] = (0, 0)

    def collect(job) -> None:
        nonlocal shape
        labels, cells = job.result()
        np.save(parked / f"{len(detections)}.npy", labels)
        shape = labels.shape
        detections.append(cells)

    try:
        # The network segments the next batch while a second thread splits and measures the frames already done
        # (numpy, scipy and scikit-image release the GIL in their inner loops); at most two batches wait.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending: deque = deque()
            for probs in tqdm(segment_frames(module, iter_frames(path), normalization, batch_size),
                              total=count_frames(path), desc=f"{condition}: frames", unit="frame"):
                pending.append(pool.submit(split_and_measure, probs))
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


def summarise_conditions(conditions: list[str], fits: list[dict]) -> list[dict]:
    """Per condition: number of fitted cells, median and IQR of tau, median final fraction."""
    out = []
    for condition in conditions:
        good = [f for f in fits if f["condition"] == condition and np.isfinite(f["tau"])]
        taus = np.array([f["tau"] for f in good])
        fractions = np.array([f["final_fraction"] for f in good])
        out.append({
            "condition": condition, "n_cells": len(good),
            "tau_median": float(np.median(taus)) if len(taus) else np.nan,
            "tau_q25": float(np.percentile(taus, 25)) if len(taus) else np.nan,
            "tau_q75": float(np.percentile(taus, 75)) if len(taus) else np.nan,
            "final_fraction_median": float(np.median(fractions)) if len(fractions) else np.nan,
        })
    return out


CELL_COLUMNS = ["condition", "time_s", "label", "y", "x", "area", "perimeter", "equivalent_diameter",
                "circularity", "cell", "frame", "parent", "area_um2", "perimeter_um", "equivalent_diameter_um"]
FIT_COLUMNS = ["condition", "cell", "n_frames", "a0", "tau", "final_fraction", "r2", "a0_um2"]
TRACK_COLUMNS = ["track_id", "frame", "time_s", "y", "x", "area", "area_um2", "parent"]
CONDITION_COLUMNS = ["condition", "n_cells", "tau_median", "tau_q25", "tau_q75", "final_fraction_median"]


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    """Rows as CSV with a fixed header (written even when there are no rows)."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def plot_results(out_dir: Path, conditions: list[str], rows: list[dict], fits: list[dict],
                 pixel_size: float | None = None) -> None:
    """Relative area vs time per cell with the condition mean; initial areas (µm² when the pixel size is known,
    else px); distribution of time constants per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fitted = {(f["condition"], f["cell"]) for f in fits}
    fig, axes = plt.subplots(1, len(conditions), figsize=(5 * len(conditions), 4), squeeze=False)
    for ax, condition in zip(axes[0], conditions):
        cells = [c for (cond, c) in fitted if cond == condition]
        curves = []
        for cell in cells:
            series = sorted((r for r in rows if r["condition"] == condition and r["cell"] == cell), key=lambda r: r["frame"])
            t, a = np.array([r["time_s"] for r in series]), np.array([r["area"] for r in series])
            ax.plot(t, a / a[0], color="0.7", lw=0.8)
            curves.append((t, a / a[0]))
        if curves:
            grid = np.unique(np.concatenate([t for t, _ in curves]))
            mean = np.nanmean([np.interp(grid, t, a, left=np.nan, right=np.nan) for t, a in curves], axis=0)
            ax.plot(grid, mean, color="C3", lw=2, label="mean")
        ax.set(title=f"{condition} ({len(cells)} cells)", xlabel="time (s)", ylabel="area / initial area")
        if curves:
            ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "area_vs_time.png", dpi=100)
    plt.close(fig)
    unit, key = ("µm²", "a0_um2") if pixel_size else ("px", "a0")
    fig, ax = plt.subplots(figsize=(5, 4))
    sizes = [[f[key] for f in fits if f["condition"] == c and f[key] is not None and np.isfinite(f[key])] for c in conditions]
    ax.boxplot([d if d else [np.nan] for d in sizes], tick_labels=conditions)
    ax.set(ylabel=f"initial area A0 ({unit})", title="cell size at the start (fitted A0)")
    fig.tight_layout()
    fig.savefig(out_dir / "initial_area_by_condition.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    data = [[f["tau"] for f in fits if f["condition"] == c and np.isfinite(f["tau"])] for c in conditions]
    ax.boxplot([d if d else [np.nan] for d in data], tick_labels=conditions)
    ax.set(ylabel="time constant tau (s)", title="shrinking time constants")
    fig.tight_layout()
    fig.savefig(out_dir / "tau_by_condition.png", dpi=100)
    plt.close(fig)
