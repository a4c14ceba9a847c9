"""Random states saved in checkpoints, so that a resumed run draws what an uninterrupted run would have drawn."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


class RNGState(L.Callback):
    """Saves the Python, NumPy and torch (CPU and CUDA) random states with every checkpoint; restores them when
    a resumed run starts training.

    Lightning restores weights, optimisers, schedulers and loop counters, but not random states: a resumed run
    would otherwise draw other crops, augmentations and shuffles than the run it continues. The states are
    restored when training starts (after the sanity check, which draws numbers an uninterrupted run never draws
    there), and the epoch's training iterator is created again from them, so they meet the training loop exactly
    where the interrupted run left it. Stored as plain lists and tensors (``weights_only`` loading keeps working).
    Each process of a DDP run saves rank zero's states only, so the equivalence holds for one process.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        version, state, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        return {
            "python": [version, list(state), gauss],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is None:
            return
        self._restore()
        # Lightning created the resumed epoch's training iterator (drawing the sampler's and the workers' seeds)
        # just before this hook, from the unrestored states; create it again from the restored ones, as the
        # interrupted run did at the start of that epoch. The epoch loop does not re-create it when resuming.
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        if fetcher is not None:
            iter(fetcher)

    def _restore(self) -> None:
        state, self._pending = self._pending, None
        version, values, gauss = state["python"]
        random.setstate((version, tuple(values), gauss))
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
