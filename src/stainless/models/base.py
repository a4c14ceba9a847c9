"""What every stainless LightningModule shares."""

from __future__ import annotations

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
