"""Predicting images larger than the network's input in overlapping, smoothly blended tiles.

Written here rather than taken from a library: MONAI's sliding_window_inference does the same, but MONAI is
not in our stack and this is thirty lines. Memory is bounded by ``batch_size`` tiles whatever the image size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from stainless.data.datasets import grid_starts


def _ramp(size: int, device: torch.device | None = None) -> torch.Tensor:
    ramp = torch.sin(torch.pi * (torch.arange(size, device=device) + 0.5) / size) ** 2
    return ramp.clamp_min(1e-3)


def blend_window(size: int, device: torch.device | None = None) -> torch.Tensor:
    """(size, size) weights, highest at the centre and small but positive at the edges (a squared sine)."""
    ramp = _ramp(size, device)
    return ramp[:, None] * ramp[None, :]


def _pad(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    pad_h, pad_w = height - image.shape[-2], width - image.shape[-1]
    if pad_h <= 0 and pad_w <= 0:
        return image
    pad = (0, max(pad_w, 0), 0, max(pad_h, 0))
    fits = max(pad_h, 0) < image.shape[-2] and max(pad_w, 0) < image.shape[-1]
    return F.pad(image[None], pad, mode="reflect" if fits else "replicate")[0]


@torch.no_grad()
def predict_tiled(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile_size: int,
    overlap: float = 0.25,
    batch_size: int = 4,
    multiple: int = 1,
) -> torch.Tensor:
    """Apply ``predict`` to a (C, H, W) image of any size, tile by tile.

    Args:
        predict: maps a batch (N, C, t, t) to (N, C_out, t, t).
        image: the input on the device ``predict`` runs on.
        tile_size: tile side (rounded up to a multiple of ``multiple``).
        overlap: fraction of the tile shared by neighbours; overlaps are blended with :func:`blend_window`.
        batch_size: tiles per call of ``predict``.
        multiple: the network's input sides must be multiples of this.

    Returns:
        (C_out, H, W) prediction.
    """
    height, width = image.shape[-2:]
    tile = -(-tile_size // multiple) * multiple
    padded = _pad(image, max(height, tile), max(width, tile))
    full_h, full_w = padded.shape[-2:]
    stride = max(1, int(round(tile * (1 - overlap))))
    rows, cols = grid_starts(full_h, tile, stride), grid_starts(full_w, tile, stride)
    corners = [(t, l) for t in rows for l in cols]
    ramp = _ramp(tile, image.device)
    window = ramp[:, None] * ramp[None, :]
    # The window is separable and the tiles form a grid, so the sum of windows over the image is the outer
    # product of two 1-D sums: computed once instead of added tile by tile.
    row_sum = torch.zeros(full_h, device=image.device)
    col_sum = torch.zeros(full_w, device=image.device)
    for t in rows:
        row_sum[t : t + tile] += ramp
    for l in cols:
        col_sum[l : l + tile] += ramp
    output = None
    for first in range(0, len(corners), batch_size):
        chunk = corners[first : first + batch_size]
        batch = torch.stack([padded[:, t : t + tile, l : l + tile] for t, l in chunk])
        result = predict(batch)
        if output is None:
            output = torch.zeros(result.shape[1], full_h, full_w, device=image.device, dtype=result.dtype)
        for (t, l), tile_out in zip(chunk, result):
            output[:, t : t + tile, l : l + tile].addcmul_(tile_out, window.to(tile_out.dtype))
    weights = (row_sum[:, None] * col_sum[None, :]).to(output.dtype)
    return output.div_(weights)[:, :height, :width].contiguous()
