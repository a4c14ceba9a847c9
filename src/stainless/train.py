"""Training from a composed Hydra config: ``train(cfg) -> metrics``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf

from stainless.checkpoint import AtomicCheckpointIO, init_weights_from, load_checkpoint, resolve_resume
from stainless.utils.config import check_types, ensure_new_run_dir, flatten, to_plain
from stainless.utils.logging import build_callbacks, build_loggers, finish_wandb, save_config, write_json
from stainless.utils.secrets import redact, redact_files, redact_text, redacted_argv


def build(config: Any, **extra: Any) -> Any:
    """Instantiate ``config._target_`` with plain (non-OmegaConf) keyword arguments, nothing nested instantiated.

    Nested ``_target_`` entries (optimisers, albumentations transforms) stay configs for the component to
    complete itself, and the component's saved hyper-parameters stay plain data.
    """
    kwargs = to_plain(config)
    cls = get_class(kwargs.pop("_target_"))
    return cls(**kwargs, **extra)


def _last_checkpoint(output_dir: Path) -> str | None:
    last = output_dir / "checkpoints" / "last.ckpt"
    return str(last) if last.is_file() else None


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (and optionally test) the model described by ``cfg``; write ``summary.json`` to the run dir.

    Returns:
        the final metrics (``val/...``, ``test/...``) as floats, plus ``best_model_path``.
    """
    failed = True
    try:
        result = _train(cfg)
        failed = False
        return result
    finally:
        finish_wandb(failed)


def _train(cfg: DictConfig) -> dict[str, Any]:
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    check_types(cfg)
    ensure_new_run_dir(output_dir)
    ckpt_path = resolve_resume(cfg.get("ckpt_path"), Path(cfg.paths.log_dir) / cfg.task_name, output_dir)
    trusted = bool(cfg.get("trust_checkpoint", False))
    resumed_wandb = None
    if ckpt_path:  # read first: a code-carrying file is refused before anything else happens
        resumed_wandb = load_checkpoint(ckpt_path, trusted).get("stainless", {}).get("wandb_run_id")
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    if cfg.get("print_config", True):
        rank_zero_info(redact_text(OmegaConf.to_yaml(cfg, resolve=True)))
    save_config(cfg, output_dir / "config_resolved.yaml")
    redact_files(output_dir / ".hydra")  # Hydra saved the config and the command line before we ran

    datamodule = build(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    init_from = model_cfg.pop("init_from", None)
    loss_cfg = model_cfg.get("loss") or {}
    if loss_cfg.get("pos_weight") == "auto":
        fraction = datamodule.positive_fraction()
        loss_cfg["pos_weight"] = (1 - fraction) / max(fraction, 1e-6)
        rank_zero_info(f"loss.pos_weight=auto: {fraction:.3f} of training pixels are foreground -> {loss_cfg['pos_weight']:.2f}")
    model = build(model_cfg, in_channels=datamodule.in_channels, out_channels=datamodule.out_channels)
    init_report = init_weights_from(model, init_from) if init_from else None
    if cfg.get("channels_last"):
        model.use_channels_last()
    if cfg.get("compile"):
        model.compile_networks()

    callbacks = build_callbacks(cfg.get("callbacks"))
    logger_cfg = to_plain(cfg.get("logger")) or {}
    for config in logger_cfg.values():
        if resumed_wandb and config and str(config.get("_target_", "")).endswith("WandbLogger") and not config.get("id"):
            config.update(id=resumed_wandb, resume="allow")  # the resumed run continues the same W&B run
            rank_zero_info(f"W&B: continuing run {resumed_wandb}")
    loggers = build_loggers(logger_cfg)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                     plugins=[AtomicCheckpointIO()])
    with redacted_argv():  # W&B starts its run here and records the command line
        for logger in loggers:
            logger.log_hyperparams(redact(flatten(cfg)))

    checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)
    best = None
    if cfg.get("validate_only"):
        if not ckpt_path:
            raise ValueError("validate_only=true: set ckpt_path=... (the checkpoint to score)")
        trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=not trusted)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    else:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=not trusted)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        best = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
        if cfg.get("test") and datamodule.samples.get("test"):
            trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})

    summary = {
        "run_dir": str(output_dir),
        "task_name": cfg.get("task_name"),
        "monitor": checkpoint.monitor if checkpoint else None,
        "best_model_path": best,
        "best_model_score": float(checkpoint.best_model_score) if best and checkpoint.best_model_score is not None else None,
        "resumed_from": ckpt_path,
        "validate_only": bool(cfg.get("validate_only")),
        "last_model_path": _last_checkpoint(output_dir),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "duration_s": round(time.time() - started, 1),
        "init_from": init_report,
        "metrics": metrics,
        "samples": {stage: [s.name for s in samples] for stage, samples in datamodule.samples.items()},
    }
    write_json(output_dir / "summary.json", summary)
    rank_zero_info(f"Run directory: {output_dir}\nBest checkpoint: {best}")
    return {**metrics, "best_model_path": best}
