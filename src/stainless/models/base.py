"""What every stainless LightningModule shares."""

from __future__ import annotations

import math
import warnings
from typing import Any

import lightning as L
import torch

# Lightning notes that a module's batch hook wins over the DataModule's: intended here (the DataModules define
# none), so the note is silenced rather than printed at every run.
warnings.filterwarnings("ignore", message=r".*overridden `on_after_batch_transfer` in `LightningModule`.*")


class StainlessModule(L.LightningModule):
    """Records its own class in checkpoints so that ``evaluate.py ckpt_path=...`` can rebuild it alone, and
    carries the speed switches every model shares (``channels_last``, ``compile``)."""

    channels_last: bool = False

    def use_channels_last(self) -> None:
        """NHWC memory layout for the weights and every image batch (faster convolutions on many back-ends)."""
        self.channels_last = True
        self.to(memory_format=torch.channels_last)

    def compile_networks(self, **options: Any) -> None:
        """``torch.compile`` each network in place (``nn.Module.compile``: parameter names, and so checkpoints,
        stay as they are). Metric collections and other parameter-free children are left alone."""
        for child in self.children():
            if any(True for _ in child.parameters()):
                child.compile(**options)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.channels_last and isinstance(batch, dict):
            return {k: v.contiguous(memory_format=torch.channels_last) if torch.is_tensor(v) and v.ndim == 4 else v
                    for k, v in batch.items()}
        return batch

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["stainless"] = {"module": f"{type(self).__module__}.{type(self).__qualname__}"}
        # a run resumed from this checkpoint continues the same W&B run (see stainless.train)
        for logger in self.loggers if self._trainer is not None else []:
            if type(logger).__name__ == "WandbLogger":
                checkpoint["stainless"]["wandb_run_id"] = logger.version

    # -- the learning-rate schedule both models share (``model.lr_schedule``) ----------------------------------

    def _progress(self) -> float:
        """Share of the run done, 0..1: batches of ``max_epochs`` or seconds of ``max_time``, whichever is further."""
        from lightning.pytorch.callbacks import Timer

        trainer = self.trainer
        done = 0.0
        if trainer.max_epochs and trainer.max_epochs > 0 and trainer.num_training_batches not in (0, float("inf")):
            done = (trainer.fit_loop.epoch_loop.total_batch_idx + 1) / (trainer.max_epochs * trainer.num_training_batches)
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        if timer is not None and timer._duration:  # trainer.max_time; the timer's elapsed time survives resumes
            done = max(done, timer.time_elapsed("train") / timer._duration)
        return min(done, 1.0)

    def lr_factor(self) -> float | None:
        """The factor of the configured learning rate for the coming batch under ``lr_schedule`` (``warmup_steps``
        of linear warm-up, then a cosine decay to ``final_factor`` at the end of the run, whichever of
        ``trainer.max_epochs`` and ``trainer.max_time`` ends it first); None without a schedule."""
        schedule = self.hparams.get("lr_schedule")
        if not schedule:
            return None
        warmup, final = schedule.get("warmup_steps", 0), schedule.get("final_factor", 0.0)
        step = self.trainer.fit_loop.epoch_loop.total_batch_idx
        factor = final + (1 - final) * 0.5 * (1 + math.cos(math.pi * self._progress()))
        if step < warmup:
            factor *= (step + 1) / warmup
        return factor
