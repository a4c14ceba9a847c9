"""Foreground probability of each frame of a stream, in batches (tiled when frames are large)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from stainless.io import normalize
from stainless.tiling import predict_tiled


@torch.no_grad()
def segment_frames(module, frames: Iterable[np.ndarray], normalization: dict, batch_size: int = 8,
                   tile_size: int = 512) -> Iterator[np.ndarray]:
    """Foreground probability (H, W) of each frame, frames taken from any iterable (a stream) in batches; whole
    frames when they fit a tile, else tiled one by one."""
    import itertools

    device = next(module.parameters()).device
    multiple = module.size_multiple
    frames = iter(frames)
    while batch := list(itertools.islice(frames, batch_size)):
        h, w = batch[0].shape[-2:]
        if max(h, w) > tile_size:
            for frame in batch:
                x = torch.from_numpy(normalize(frame, **normalization)).to(device)
                yield predict_tiled(lambda b: _foreground(module, b)[:, None], x, tile_size, 0.25, batch_size,
                                    multiple)[0].cpu().numpy()
            continue
        ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
        x = torch.from_numpy(np.stack([normalize(f, **normalization) for f in batch])).to(device)
        x = torch.nn.functional.pad(x, (0, pw - w, 0, ph - h), mode="reflect" if ph - h < h and pw - w < w else "replicate")
        yield from _foreground(module, x)[:, :h, :w].cpu().numpy()


def _foreground(module, x: torch.Tensor) -> torch.Tensor:
    probs = module.probabilities(x)
    return probs[:, 0] if probs.shape[1] == 1 else 1 - probs[:, 0]
