"""Saving a checkpoint when the job is told to stop (SIGTERM: what SLURM sends before a job's time limit)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


class CheckpointOnSigterm(L.Callback):
    """On SIGTERM, write ``<dirpath>/last.ckpt`` (atomically, see ``AtomicCheckpointIO``) before the process exits.

    Lightning notices SIGTERM between two training batches and stops there, so the checkpoint holds a
    consistent state, mid-epoch included; ``ckpt_path=last`` (or this file) resumes it. Other failures (a NaN
    loss, an error in the data) save nothing: the last good checkpoint stays as it was.
    """

    def __init__(self, dirpath: str, filename: str = "last"):
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)
            rank_zero_info(f"SIGTERM: saved {self.path} at epoch {trainer.current_epoch}, step {trainer.global_step}; "
                           f"resume with ckpt_path={self.path}")
