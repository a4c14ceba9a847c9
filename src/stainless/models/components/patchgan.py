"""PatchGAN discriminator of pix2pix: classifies overlapping patches of an (input, output) pair."""

from __future__ import annotations

import torch
from torch import nn

from stainless.models.components.pix2pix_unet import norm_layer


class PatchGANDiscriminator(nn.Module):
    """``n_layers`` stride-2 convolutions then two stride-1 ones; one logit per patch.

    With ``n_layers=3`` each logit sees a 70x70 receptive field (the pix2pix default).

    Args:
        in_channels: channels of the concatenated (input, output) pair.
        ndf: filters of the first layer (doubling per layer, capped at 8 x ndf).
        n_layers: depth, which sets the patch size.
        norm: ``batch``, ``instance`` or ``none``.
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        bias = norm != "batch"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=bias),
                norm_layer(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
