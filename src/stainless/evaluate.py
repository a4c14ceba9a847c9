"""Evaluating a checkpoint on its test split or on new images: ``evaluate(cfg) -> summary`` (the entry function of
``evaluate.py``): the checkpoint (or several segmentation checkpoints, their maps averaged) is loaded and handed to
the evaluation of its job."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from stainless.evaluation.images import evaluate_images
from stainless.evaluation.inputs import data_options
from stainless.evaluation.segmentation import evaluate_segmenter
from stainless.models.checkpoint import CheckpointError
from stainless.models.ensemble import SegmentationEnsemble, checkpoint_paths, load_models
from stainless.models.segmentation_module import SegmentationModule
from stainless.utils.config import check_types, ensure_new_run_dir
from stainless.utils.secrets import redact_files


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Predict with a checkpoint, score against targets when there are any, write files and a report.

    Writes into the run directory: ``predictions/*.tif``, ``maps/*.{png,tif}``, ``metrics.csv`` (one row per
    image and method), ``summary.json`` (mean, std, median... per metric and method) and ``report.html``
    (or ``report.md``).

    Returns:
        the summary dictionary.
    """
    started = time.time()
    out_dir = Path(cfg.paths.output_dir)
    check_types(cfg)
    ensure_new_run_dir(out_dir)
    redact_files(out_dir / ".hydra")
    module, checkpoint = load_models(cfg.ckpt_path, cfg.get("trust_checkpoint", False))
    device = _device(cfg.device)
    module.to(device)
    data_hp = checkpoint.get("datamodule_hyper_parameters")
    if not data_hp:
        raise CheckpointError(f"{checkpoint_paths(cfg.ckpt_path)[0]}: holds no data settings (was it written by "
                              "stainless train?)")
    data_hp = data_options(cfg, data_hp)
    if isinstance(module, (SegmentationModule, SegmentationEnsemble)):
        return evaluate_segmenter(cfg, module, {**checkpoint, "datamodule_hyper_parameters": data_hp}, out_dir, device,
                                  started)
    if cfg.videos:
        raise ValueError("videos=...: video analysis needs a segmentation checkpoint")
    return evaluate_images(cfg, module, data_hp, out_dir, device, started)
