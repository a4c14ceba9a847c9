"""Compare training runs without W&B: one table of runs, the settings that differ, final and best metrics.

    python -m stainless.evaluation.compare outputs/virtual_labeling/multiruns/<time>
    python -m stainless.evaluation.compare outputs/virtual_labeling/runs/<a> outputs/virtual_labeling/runs/<b> --csv runs.csv

Reads each run's ``summary.json`` and ``config_resolved.yaml``; prints the table (best run first by the runs'
``optimized_metric``) and writes it as CSV (``comparison.csv`` in the single directory given, or ``--csv``).
Runs of a cross-validation (``-m cv.folds=k cv.fold=0,...,k-1``) also give one row per setting with the mean and
standard deviation of every metric over the folds (``cv_results.csv``, also written at the end of the multirun).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from stainless import metric_direction
from stainless.utils.config import flatten

# Settings that differ between any two runs without saying anything about them.
IGNORED_PREFIXES = ("paths.", "hydra.")


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Training run directories (holding a training ``summary.json``) in or under each path, sorted."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such run or multirun directory")
        candidates = [path / "summary.json"] if (path / "summary.json").is_file() else sorted(path.rglob("summary.json"))
        for summary in candidates:
            if "global_step" in json.loads(summary.read_text()):  # evaluations have summaries too
                runs.append(summary.parent)
    return sorted(dict.fromkeys(runs), key=lambda p: (str(p.parent), int(p.name) if p.name.isdigit() else 0, p.name))


def _run_row(run: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    summary = json.loads((run / "summary.json").read_text())
    config_file = run / "config_resolved.yaml"
    config = flatten(yaml.safe_load(config_file.read_text()) or {}, sep=".") if config_file.is_file() else {}
    metrics = summary.get("metrics", {})
    row = {"run": str(run)}
    row.update({f"final {k}": v for k, v in metrics.items() if not k.endswith("_best")})
    row.update({f"best {k.removesuffix('_best')}": v for k, v in metrics.items() if k.endswith("_best")})
    row.update(epochs=summary.get("epochs"), duration_s=summary.get("duration_s"),
               checkpoint=summary.get("best_model_path") or summary.get("last_model_path"))
    return row, config


def compare_runs(runs: Sequence[Path]) -> pd.DataFrame:
    """One row per run: the settings that differ between the runs, final and best metrics, the checkpoint."""
    if not runs:
        raise ValueError("no training runs found (directories holding summary.json)")
    rows, configs = zip(*(_run_row(run) for run in runs))
    keys = sorted({k for c in configs for k in c if not k.startswith(IGNORED_PREFIXES)})

    def own_path(key: str) -> bool:  # e.g. callbacks.*.dirpath: each run's own directory, not a setting
        return all(isinstance(c.get(key), str) and str(Path(run).resolve()) in c[key] for run, c in zip(runs, configs))

    differing = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1
                 and not own_path(k)]
    table = pd.DataFrame([{**{"run": r["run"]}, **{k: c.get(k) for k in differing}, **{k: v for k, v in r.items() if k != "run"}}
                          for r, c in zip(rows, configs)])
    optimized = {c.get("optimized_metric") for c in configs} - {None}
    if len(optimized) == 1:
        metric = optimized.pop()
        column = f"best {metric.removesuffix('_best')}" if metric.endswith("_best") else f"final {metric}"
        if column in table:
            table = table.sort_values(column, ascending=metric_direction(metric) == "minimize", na_position="last")
    return table.reset_index(drop=True)


FOLD = "cv.fold"
NOT_SETTINGS = ("run", "checkpoint", "epochs", "duration_s", FOLD)


def cv_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of each metric over the folds of each setting (runs differing by ``cv.fold``).

    Returns:
        one row per setting: the settings, ``folds`` (runs averaged), and ``<metric> mean`` / ``<metric> sd``.

    Raises:
        ValueError: the runs are not folds of a cross-validation.
    """
    if FOLD not in table:
        raise ValueError("no cross-validation: the runs do not differ by cv.fold")
    metrics = [c for c in table.columns if c.startswith(("final ", "best ")) and pd.api.types.is_numeric_dtype(table[c])]
    settings = [c for c in table.columns if c not in NOT_SETTINGS and c not in metrics and not c.endswith(f".{FOLD}")]
    keyed = table.assign(**{c: table[c].map(lambda v: json.dumps(v, default=str)) for c in settings})
    rows = []
    for key, group in (keyed.groupby(settings, sort=False, dropna=False) if settings else [((), keyed)]):
        key = key if isinstance(key, tuple) else (key,)
        row = {c: json.loads(k) for c, k in zip(settings, key)}
        row["folds"] = int(group[FOLD].nunique())
        for metric in metrics:
            row[f"{metric} mean"] = float(group[metric].mean())
            row[f"{metric} sd"] = float(group[metric].std(ddof=1)) if len(group) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def format_cv(summary: pd.DataFrame) -> str:
    """The cross-validation table as text, ``mean +- sd`` per metric."""
    metrics = [c.removesuffix(" mean") for c in summary.columns if c.endswith(" mean")]
    shown = summary[[c for c in summary.columns if not c.endswith((" mean", " sd"))]].copy()
    for metric in metrics:
        shown[metric] = [f"{m:.4g} +- {d:.2g}" for m, d in zip(summary[f"{metric} mean"], summary[f"{metric} sd"])]
    return shown.to_string(index=False)


def write_cv_table(directory: str | Path) -> pd.DataFrame | None:
    """Write ``cv_results.csv`` in a multirun directory whose runs are cross-validation folds.

    Returns:
        the table (see :func:`cv_summary`), or None when the runs are not folds of a cross-validation.
    """
    runs = find_runs([directory])
    table = compare_runs(runs) if runs else None
    if table is None or FOLD not in table:
        return None
    summary = cv_summary(table)
    summary.to_csv(Path(directory) / "cv_results.csv", index=False)
    return summary


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(prog="python -m stainless.evaluation.compare", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="multirun directories and/or run directories")
    parser.add_argument("--csv", help="where to write the table (default: <dir>/comparison.csv for one directory)")
    args = parser.parse_args(argv)
    table = compare_runs(find_runs(args.paths))
    csv_path = Path(args.csv) if args.csv else (Path(args.paths[0]) / "comparison.csv" if len(args.paths) == 1 else None)
    with pd.option_context("display.max_columns", None, "display.width", 250, "display.max_colwidth", 80):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if csv_path is not None:
        table.to_csv(csv_path, index=False)
        print(f"\nWritten to {csv_path}")
    if FOLD in table:
        summary = cv_summary(table)
        print("\nCross-validation, mean +- sd over folds:\n" + format_cv(summary))
        if csv_path is not None:
            summary.to_csv(csv_path.with_name("cv_results.csv"), index=False)
    return table


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"stainless.evaluation.compare: {error}")
