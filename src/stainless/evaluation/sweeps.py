"""Hydra callbacks: work done once a whole multirun has finished."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class CrossValidationTable(Callback):
    """After a multirun over ``cv.fold``, write ``cv_results.csv`` (mean and sd of every metric over the folds of
    each setting) into the sweep directory and print it; other multiruns are left alone."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from stainless.evaluation.compare import format_cv, write_cv_table  # imported when the sweep ends

        try:
            summary = write_cv_table(config.hydra.sweep.dir)
        except (OSError, ValueError, KeyError) as error:  # the runs are written; a table problem must not fail the sweep
            print(f"Cross-validation table not written: {error}")
            return
        if summary is not None:
            print(f"Cross-validation, mean +- sd over folds ({config.hydra.sweep.dir}/cv_results.csv):\n"
                  f"{format_cv(summary)}")
