"""Loading checkpoints safely (tensors and plain values only) and rebuilding models from them alone."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from lightning.pytorch.utilities import rank_zero_info


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the file named in the message."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: no code in the file is ever executed.

    Raises:
        CheckpointError: missing file, or a file that is not a plain-data PyTorch checkpoint.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path}: not a loadable weights-only checkpoint (refused or corrupt: {first_line})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dictionary, found {type(checkpoint).__name__}")
    return checkpoint


def module_class(checkpoint: dict[str, Any], path: str | Path) -> type:
    """The stainless LightningModule class recorded in a checkpoint."""
    name = checkpoint.get("stainless", {}).get("module")
    if not name or not name.startswith("stainless."):
        raise CheckpointError(f"{path}: not a stainless checkpoint (no model class recorded)")
    return get_class(name)


def module_from_checkpoint(path: str | Path):
    """Rebuild a stainless LightningModule (weights included) from its checkpoint alone.

    Pretrained-encoder downloads are switched off: the checkpoint carries every weight.

    Returns:
        (module in eval mode, checkpoint dict)
    """
    checkpoint = load_checkpoint(path)
    cls = module_class(checkpoint, path)
    hparams = copy.deepcopy(checkpoint.get("hyper_parameters", {}))
    for key in ("generator", "backbone"):
        if isinstance(hparams.get(key), dict) and "encoder_weights" in hparams[key]:
            hparams[key]["encoder_weights"] = None
    module = cls(**hparams)
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval(), checkpoint


def init_weights_from(module: torch.nn.Module, path: str | Path) -> dict[str, Any]:
    """Copy matching weights (same name and shape) from a checkpoint into ``module`` (fine-tuning).

    Returns:
        report with ``loaded`` count and the ``missing``, ``unexpected`` and ``shape_mismatch`` key lists.
    """
    checkpoint = load_checkpoint(path)
    source = checkpoint.get("state_dict", checkpoint)
    target = module.state_dict()
    matched = {k: v for k, v in source.items() if k in target and tuple(v.shape) == tuple(target[k].shape)}
    report = {
        "path": str(path),
        "loaded": len(matched),
        "missing": sorted(set(target) - set(source)),
        "unexpected": sorted(set(source) - set(target)),
        "shape_mismatch": sorted(k for k in source if k in target and tuple(source[k].shape) != tuple(target[k].shape)),
    }
    module.load_state_dict(matched, strict=False)
    rank_zero_info(
        f"init_from {path}: loaded {report['loaded']} tensors; {len(report['missing'])} missing "
        f"{report['missing'][:5]}, {len(report['unexpected'])} unexpected {report['unexpected'][:5]}, "
        f"{len(report['shape_mismatch'])} with another shape {report['shape_mismatch'][:5]}"
    )
    return report
