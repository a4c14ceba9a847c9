"""What every stainless LightningModule shares."""

from __future__ import annotations

from typing import Any

import lightning as L


class StainlessModule(L.LightningModule):
    """Records its own class in checkpoints so that ``evaluate.py ckpt_path=...`` can rebuild it alone."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["stainless"] = {"module": f"{type(self).__module__}.{type(self).__qualname__}"}
