"""Build a generator network from the shared ``backbone`` config group."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from stainless.models.components.pix2pix_unet import UNetGenerator
from stainless.utils.pretrained import check_encoder_weights

CLASSIC = "pix2pix_unet"


def build_smp(backbone: Mapping[str, Any], arch: str, in_channels: int, classes: int) -> nn.Module:
    """An smp model (``smp.create_model``) with the backbone's encoder; pretrained weights checked first."""
    import segmentation_models_pytorch as smp

    if backbone["name"] == CLASSIC:
        raise ValueError("backbone=pix2pix_unet is the GAN generator only; choose an encoder backbone (e.g. resnet34)")
    weights = backbone.get("encoder_weights")
    check_encoder_weights(backbone["encoder_name"], weights)
    extra = {k: v for k, v in backbone.items() if k not in {"name", "encoder_name", "encoder_weights"}}
    if backbone["encoder_name"].startswith("tu-") and weights is not None:
        weights = True  # timm universal encoders take True; the variant is part of the name
    return smp.create_model(
        arch, encoder_name=backbone["encoder_name"], encoder_weights=weights,
        in_channels=in_channels, classes=classes, **extra,
    )


def build_generator(backbone: Mapping[str, Any], in_channels: int, out_channels: int) -> nn.Module:
    """The classic pix2pix U-Net, or an smp U-Net with any encoder, ending in tanh (outputs in [-1, 1])."""
    if backbone["name"] == CLASSIC:
        options = {k: v for k, v in backbone.items() if k != "name"}
        return UNetGenerator(in_channels, out_channels, **options)
    return nn.Sequential(build_smp(backbone, "unet", in_channels, out_channels), nn.Tanh())
