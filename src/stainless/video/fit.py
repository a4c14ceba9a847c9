"""How fast cells shrink: the exponential-plateau fit per cell and the summary per condition."""

from __future__ import annotations

import numpy as np
from scipy.optimize import curve_fit


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
