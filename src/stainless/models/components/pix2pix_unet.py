"""The classic pix2pix U-Net generator (Isola et al. 2017), written out level by level."""

from __future__ import annotations

import torch
from torch import nn


def norm_layer(kind: str, channels: int) -> nn.Module:
    """``batch``, ``instance`` or ``none``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; use batch, instance or none")


class UNetGenerator(nn.Module):
    """pix2pix U-Net: ``num_downs`` stride-2 4x4 convolutions down, transposed convolutions up, skip connections.

    Same layers as the reference implementation (LeakyReLU 0.2 down, ReLU up, dropout in the inner 512-channel
    decoder levels, tanh output). Inputs must have sides divisible by ``2**num_downs``.

    Args:
        in_channels, out_channels: image channels in and out.
        num_downs: down-sampling levels (7 for 128 px patches, 8 for 256 px).
        ngf: filters of the outermost level (doubling per level, capped at 8 x ngf).
        norm: ``batch``, ``instance`` or ``none``.
        dropout: dropout probability in the inner decoder levels (0 disables).
        upsample: ``transpose`` (4x4 stride-2 transposed convolutions, as in the paper) or ``resize``
            (bilinear up-sampling then a 3x3 convolution: no checkerboard artefacts, Odena et al. 2016).
    """

    def __init__(
        self, in_channels: int, out_channels: int, num_downs: int = 7, ngf: int = 64, norm: str = "batch",
        dropout: float = 0.5, upsample: str = "transpose",
    ):
        super().__init__()
        if num_downs < 2:
            raise ValueError("num_downs must be at least 2")
        if upsample not in {"transpose", "resize"}:
            raise ValueError(f"backbone.upsample: unknown {upsample!r}; use transpose or resize")
        self.num_downs = num_downs
        bias = norm != "batch"
        chans = [ngf * min(2**i, 8) for i in range(num_downs)]
        self.downs = nn.ModuleList()
        for i, c in enumerate(chans):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2, True)]
            layers.append(nn.Conv2d(in_channels if i == 0 else chans[i - 1], c, 4, 2, 1, bias=bias or i == 0))
            if 0 < i < num_downs - 1:
                layers.append(norm_layer(norm, c))
            self.downs.append(nn.Sequential(*layers))
        self.ups = nn.ModuleList()
        for i in reversed(range(num_downs)):
            c_in = chans[i] if i == num_downs - 1 else 2 * chans[i]
            c_out = out_channels if i == 0 else chans[i - 1]
            if upsample == "transpose":
                up: list[nn.Module] = [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias or i == 0)]
            else:
                up = [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                      nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias or i == 0)]
            layers = [nn.ReLU(True), *up]
            if i == 0:
                layers.append(nn.Tanh())
            else:
                layers.append(norm_layer(norm, c_out))
                if dropout and 4 <= i <= num_downs - 2:
                    layers.append(nn.Dropout(dropout))
            self.ups.append(nn.Sequential(*layers))

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this."""
        return 2**self.num_downs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
        for level, up in enumerate(self.ups):
            if level:
                x = torch.cat([x, skips[self.num_downs - 1 - level]], dim=1)
            x = up(x)
        return x
