"""Where the wall time of a run goes: training versus validation."""

from __future__ import annotations

import time

import lightning as L


class ValidationTime(L.Callback):
    """Seconds spent in validation loops (sanity check included) and in the whole fit, for ``summary.json``."""

    def __init__(self) -> None:
        self.validation_s = 0.0
        self.fit_s = 0.0
        self._started: float | None = None
        self._fit_started: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_started = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._fit_started is not None:
            self.fit_s += time.perf_counter() - self._fit_started

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started is not None and trainer.state.fn == "fit":
            self.validation_s += time.perf_counter() - self._started

    @property
    def share(self) -> float | None:
        """Validation's share of the fit's wall time (None before a fit ended)."""
        return self.validation_s / self.fit_s if self.fit_s > 0 else None
