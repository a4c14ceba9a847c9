"""What each process of a distributed run trained on: proof that the ranks ran, each with its own shard."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class RankShards(L.Callback):
    """Counts the training samples each rank saw and fingerprints its first batch (the sum of its input pixels);
    gathered to every rank at the end of the fit. One process: one entry."""

    def __init__(self) -> None:
        self.samples = 0
        self.fingerprint = 0.0
        self.per_rank: list[dict[str, Any]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        source = batch["source"] if isinstance(batch, dict) else batch[0]
        if self.samples == 0:
            self.fingerprint = float(source.detach().double().sum())
        self.samples += int(source.shape[0])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        local = torch.tensor([float(trainer.global_rank), float(self.samples), self.fingerprint], dtype=torch.float64,
                             device=pl_module.device)
        gathered = pl_module.all_gather(local).reshape(-1, 3).cpu().tolist()
        self.per_rank = [{"rank": int(r), "training_samples": int(n), "first_batch_sum": f} for r, n, f in gathered]
