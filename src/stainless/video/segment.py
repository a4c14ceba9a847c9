"""A segmenter's maps of each frame of a stream (foreground probability, and the instance head's map when the model
has one), in batches (tiled when frames are large)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from stainless.inference.tiling import predict_tiled
from stainless.io import normalize


@torch.no_grad()
def segment_frames(module, frames: Iterable[np.ndarray], normalization: dict, batch_size: int = 8,
                   tile_size: int = 512) -> Iterator[np.ndarray]:
    """Maps (C, H, W) of each frame (see :func:`segmentation_maps`), frames taken from any iterable (a stream) in
    batches; whole frames when they fit a tile, else tiled one by one."""
    import itertools

    device = next(module.parameters()).device
    multiple = module.size_multiple
    frames = iter(frames)
    while batch := list(itertools.islice(frames, batch_size)):
        h, w = batch[0].shape[-2:]
        if max(h, w) > tile_size:
            for frame in batch:
                x = torch.from_numpy(normalize(frame, **normalization)).to(device)
                yield predict_tiled(lambda b: segmentation_maps(module, b), x, tile_size, 0.25, batch_size,
                                    multiple).cpu().numpy()
            continue
        ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
        x = torch.from_numpy(np.stack([normalize(f, **normalization) for f in batch])).to(device)
        x = torch.nn.functional.pad(x, (0, pw - w, 0, ph - h), mode="reflect" if ph - h < h and pw - w < w else "replicate")
        yield from segmentation_maps(module, x)[..., :h, :w].cpu().numpy()


def segmentation_maps(module, x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W): channel 0 the foreground probability (any class but background), channel 1 the instance
    head's map when the model has one (``SegmentationModule.maps``)."""
    if hasattr(module, "maps"):
        return module.maps(x)
    probs = module.probabilities(x)
    return probs[:, :1] if probs.shape[1] == 1 else 1 - probs[:, :1]


def instance_mode(module) -> str:
    """How the model parts touching objects: ``none`` (a distance watershed of its mask), ``boundary`` or
    ``distance`` (its instance head)."""
    hparams = getattr(module, "hparams", None)
    return str(hparams.get("instances", "none")) if hparams is not None else "none"
