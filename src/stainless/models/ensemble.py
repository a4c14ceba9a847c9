"""Several segmentation checkpoints used as one model: their maps averaged pixel by pixel.

Models trained with different seeds (or on different folds) make different mistakes; the average of their
foreground probabilities and instance maps is steadier than any one of them, which is why nnU-Net predicts with the
average of its five folds. ``evaluate.py ckpt_path=[a.ckpt,b.ckpt,c.ckpt]`` scores such an ensemble: images, the
split tuning and videos all see it as one model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import ListConfig

from stainless.models.checkpoint import CheckpointError, module_from_checkpoint
from stainless.models.segmentation_module import SegmentationModule

# what members must share: the inputs they read and the maps they return (the rest, e.g. the object scale and the
# data split, is the first checkpoint's)
SHARED_MODEL = ("in_channels", "classes", "instances")
SHARED_DATA = ("source_channels", "channel_axis", "normalization")


class SegmentationEnsemble(torch.nn.Module):
    """Segmentation models whose maps are averaged; reads like one ``SegmentationModule`` to evaluation and video.

    ``hparams`` (threshold, instance mode, object scale) are the first member's; ``size_multiple`` is the largest.
    """

    def __init__(self, members: Sequence[SegmentationModule]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"SegmentationEnsemble: needs two members or more, got {len(members)}")
        self.members = torch.nn.ModuleList(members)
        self.hparams = members[0].hparams
        self.size_multiple = max(int(m.size_multiple) for m in members)

    def maps(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 1 + instance channels, H, W): each member's ``maps``, averaged."""
        return torch.stack([member.maps(image) for member in self.members]).mean(0)


def checkpoint_paths(ckpt_path: Any) -> list[str]:
    """``ckpt_path`` as a list of paths: one path, or a list of them (``ckpt_path=[a.ckpt,b.ckpt]``).

    Raises:
        CheckpointError: an empty list.
    """
    if not isinstance(ckpt_path, (list, tuple, ListConfig)):  # a path (or a number Hydra read from one)
        return [str(ckpt_path)]
    paths = [str(p) for p in ckpt_path]
    if not paths:
        raise CheckpointError("ckpt_path=[]: give a checkpoint, or a list of segmentation checkpoints to average")
    return paths


def checkpoint_label(ckpt_path: Any) -> str | list[str]:
    """What a summary records as its checkpoint: the resolved path, or the list of them for an ensemble."""
    paths = [str(Path(p).expanduser().resolve()) for p in checkpoint_paths(ckpt_path)]
    return paths[0] if len(paths) == 1 else paths


def load_models(ckpt_path: Any, trusted: bool = False) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model of ``ckpt_path`` and the checkpoint whose settings evaluation uses: one checkpoint's module, or a
    ``SegmentationEnsemble`` of several with the first one's checkpoint.

    Raises:
        CheckpointError: naming the checkpoint that is not a segmentation model or does not match the first one
            (another instance mode, class or channel count, or other input channels or normalisation).
    """
    paths = checkpoint_paths(ckpt_path)
    if len(paths) == 1:
        return module_from_checkpoint(paths[0], trusted)
    members, first = [], None
    for path in paths:
        module, checkpoint = module_from_checkpoint(path, trusted)
        if not isinstance(module, SegmentationModule):
            raise CheckpointError(f"{path}: an ensemble averages segmentation checkpoints; this one holds a "
                                  f"{type(module).__name__}")
        if first is None:
            first = (path, module, checkpoint)
        else:
            _check_member(path, module, checkpoint, *first)
        members.append(module)
    rank_zero_info(f"Averaging the maps of {len(paths)} checkpoints: {', '.join(paths)} (settings of the first)")
    return SegmentationEnsemble(members).eval(), first[2]


def _check_member(path: str, module, checkpoint: dict, first_path: str, first_module, first_checkpoint: dict) -> None:
    for key in SHARED_MODEL:
        mine, theirs = module.hparams.get(key), first_module.hparams.get(key)
        if mine != theirs:
            raise CheckpointError(f"{path}: model.{key}={mine}, but {first_path} has {theirs}; an ensemble's "
                                  "checkpoints must return the same maps")
    data, first_data = (c.get("datamodule_hyper_parameters") or {} for c in (checkpoint, first_checkpoint))
    for key in SHARED_DATA:
        if data.get(key) != first_data.get(key):
            raise CheckpointError(f"{path}: data.{key}={data.get(key)}, but {first_path} has {first_data.get(key)}; "
                                  "an ensemble's checkpoints must read their inputs the same way")
