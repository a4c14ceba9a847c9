"""Tables, plots and overlay pictures of a video analysis."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

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


def _overlay(frame: np.ndarray, labels: np.ndarray, cells: list[dict]) -> np.ndarray:
    """The frame with cell outlines and track ids (centroids from ``measure``: nothing measured twice)."""
    import cv2

    grey = (frame[0] if frame.ndim == 3 else frame).astype(np.float32)
    # display range from every 4th pixel of each axis: the percentiles of a full frame cost more than the drawing
    low, high = np.percentile(grey[::4, ::4], [0.5, 99.5])
    grey = np.clip((grey - low) / (high - low), 0, 1) if high > low else np.zeros_like(grey)
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, -1)
    rgb[outlines(labels)] = (255, 200, 0)
    for cell in cells:
        y, x = int(cell["y"]), int(cell["x"])
        cv2.putText(rgb, str(cell["cell"]), (x - 6, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 40, 40), 1)
    return rgb


def outlines(labels: np.ndarray) -> np.ndarray:
    """Pixels on either side of a border between labels (background included): scikit-image's ``find_boundaries``
    (mode ``thick``), a dilation differing from an erosion by the 4-neighbour cross, in OpenCV at a tenth of the cost."""
    import cv2

    top = labels.max(initial=0)
    if top >= 2**24:  # beyond float32's exact integers
        from skimage.segmentation import find_boundaries

        return find_boundaries(labels)
    values = labels.astype(np.uint16 if top < 2**16 else np.float32)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    return cv2.dilate(values, cross) != cv2.erode(values, cross)
