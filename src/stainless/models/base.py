"""What every stainless LightningModule shares."""

from __future__ import annotations

from typing import Any

import lightning as L


class StainlessModule(L.LightningModule):
    """Records its own class in checkpoints so that ``evaluate.py ckpt_path=...`` can rebuild it alone."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["stainless"] = {"module": f"{type(self).__module__}.{type(self).__qualname__}"}
        # a run resumed from this checkpoint continues the same W&B run (see stainless.train)
        for logger in self.loggers if self._trainer is not None else []:
            if type(logger).__name__ == "WandbLogger":
                checkpoint["stainless"]["wandb_run_id"] = logger.version
