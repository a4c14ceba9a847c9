"""Turning images and metric maps into RGB pictures and grids."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, 3, H, W): grey for one channel, first three channels otherwise."""
    images = images.detach().float().clamp(0, 1).cpu()
    if images.shape[1] == 1:
        return images.repeat(1, 3, 1, 1)
    if images.shape[1] == 2:
        return torch.cat([images, torch.zeros_like(images[:, :1])], 1)
    return images[:, :3]


def colorize(maps: torch.Tensor, cmap: str = "magma", vmin: float = 0.0, vmax: float | None = None) -> torch.Tensor:
    """(N, 1, H, W) values -> (N, 3, H, W) colours; ``vmax`` defaults to the maximum over the batch."""
    values = maps.detach().float().cpu()[:, 0].numpy()
    top = float(values.max()) if vmax is None else vmax
    scaled = np.clip((values - vmin) / max(top - vmin, 1e-8), 0, 1)
    rgb = colormaps[cmap](scaled)[..., :3]
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).float()


def grid(panels: dict[str, torch.Tensor], pad: int = 2) -> np.ndarray:
    """Rows of samples, one column per panel (all (N, 3, H, W) in [0, 1]) -> uint8 HWC image."""
    columns = list(panels.values())
    n, _, h, w = columns[0].shape
    out = np.ones((n * (h + pad) + pad, len(columns) * (w + pad) + pad, 3), np.float32)
    for col, images in enumerate(columns):
        for row in range(n):
            top, left = pad + row * (h + pad), pad + col * (w + pad)
            out[top : top + h, left : left + w] = images[row].permute(1, 2, 0).numpy()
    return (out * 255).round().astype(np.uint8)


def image_to_image_panels(
    source: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, maps: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Input, prediction, target and coloured metric maps (|error|, 1-SSIM, LPIPS if present), (N, 3, H, W)."""
    panels = {"input": to_rgb(source), "prediction": to_rgb(pred), "target": to_rgb(target),
              "abs_error": colorize(maps["abs_error"], "magma", 0.0, 0.5),
              "1-ssim": colorize(1 - maps["ssim"], "viridis", 0.0, 1.0)}
    if "lpips" in maps:
        panels["lpips"] = colorize(maps["lpips"], "inferno")
    return panels
