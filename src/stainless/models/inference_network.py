"""The trained network alone, as it predicts: what leaves the project (TorchScript, ONNX, bioimage.io packages).

A LightningModule carries losses, metrics and a discriminator; an exported model needs only the network and the
few operations between its output and a result. :class:`InferenceNetwork` is that, built from plain keyword
arguments (a bioimage.io package rebuilds it from them) with the module's network weights under ``net.``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stainless.models.components.generators import build_generator, build_smp

JOBS = ("virtual_labeling", "segmentation")
OUTPUTS = ("final", "raw")


class InferenceNetwork(nn.Module):
    """Input normalised to [0, 1] (N, C, H, W) -> prediction (N, K, H, W).

    Args:
        job: ``virtual_labeling`` (the pix2pix generator) or ``segmentation`` (an smp model).
        in_channels, out_channels: channels of input and output (``out_channels``: classes for segmentation).
        network: the generator or backbone settings recorded in the checkpoint (``encoder_weights`` ignored).
        arch: the smp architecture (segmentation only).
        output: ``final``: images clamped to [0, 1], or foreground / class probabilities; ``raw``: the
            generator's unclamped image, or logits (a bioimage.io package applies the sigmoid as post-processing).
        instance_channels: channels of a segmenter's instance head (``model.instances``), after the classes; its
            map (boundary probability or normalised distance) follows the probabilities in the output.
    """

    def __init__(self, job: str, in_channels: int, out_channels: int, network: dict[str, Any], arch: str | None = None,
                 output: str = "final", instance_channels: int = 0):
        super().__init__()
        if job not in JOBS or output not in OUTPUTS:
            raise ValueError(f"InferenceNetwork: job must be one of {JOBS} and output one of {OUTPUTS}")
        network = {**network, "encoder_weights": None} if "encoder_weights" in network else dict(network)
        self.job, self.output, self.classes = job, output, out_channels
        if job == "virtual_labeling":
            self.net = build_generator(network, in_channels, out_channels)
        else:
            self.net = build_smp(network, arch or "unet", in_channels, out_channels + instance_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.job == "virtual_labeling":
            image = (self.net(x * 2 - 1) + 1) / 2  # the generator works in [-1, 1], as in Pix2PixModule.forward
            return image.clamp(0, 1) if self.output == "final" else image
        logits = self.net(x)
        if self.output == "raw":
            return logits
        semantic, head = logits[:, : self.classes], logits[:, self.classes :]
        probabilities = torch.sigmoid(semantic) if self.classes == 1 else semantic.softmax(1)
        return torch.cat([probabilities, torch.sigmoid(head)], 1) if head.shape[1] else probabilities


def network_kwargs(module) -> dict[str, Any]:
    """The keyword arguments of :class:`InferenceNetwork` (output aside) for a stainless LightningModule."""
    hp = module.hparams
    if hasattr(module, "generator"):
        return {"job": "virtual_labeling", "in_channels": int(hp.in_channels), "out_channels": int(hp.out_channels),
                "network": dict(hp.generator)}
    if hasattr(module, "net"):
        kwargs = {"job": "segmentation", "in_channels": int(hp.in_channels), "out_channels": int(hp.classes),
                  "network": dict(hp.backbone), "arch": str(hp.arch)}
        return {**kwargs, "instance_channels": module.instance_channels} if module.instance_channels else kwargs
    raise ValueError(f"{type(module).__name__}: not a stainless model with a network to export")


def network_attribute(module) -> str:
    """Where a LightningModule keeps the network that :class:`InferenceNetwork` holds as ``net``."""
    return "generator" if hasattr(module, "generator") else "net"


def inference_network(module, output: str = "final") -> InferenceNetwork:
    """An :class:`InferenceNetwork` carrying ``module``'s network weights, in eval mode on the CPU."""
    network = InferenceNetwork(**network_kwargs(module), output=output)
    network.net.load_state_dict(getattr(module, network_attribute(module)).state_dict())
    return network.eval()
