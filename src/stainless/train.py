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

from stainless.callbacks.ranks import RankShards
from stainless.callbacks.timing import ValidationTime
from stainless.models.checkpoint import AtomicCheckpointIO, init_weights_from, load_checkpoint, resolve_resume
from stainless.utils.config import check_types, ensure_new_run_dir, flatten, is_global_zero_process, to_plain
from stainless.utils.errors import log_file
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


def check_setup(cfg: DictConfig, datamodule: Any, model: Any) -> None:
    """Settings that would fail only once training runs, refused before it starts with the value that works.

    Raises:
        ValueError: patch size not a multiple of what the network needs (``model.size_multiple``), a split left
            empty, or no validation data while a metric selects checkpoints.
    """
    patch, multiple = int(cfg.data.patch_size), model.size_multiple
    if patch % multiple:
        backbone = cfg.get("backbone") or {}
        classic = "num_downs" in backbone
        setting = f"backbone.num_downs={backbone.num_downs}" if classic else f"the {backbone.get('encoder_name')} encoder"
        hint = f"data.patch_size={max(multiple, patch // multiple * multiple)}"
        if classic and patch & (patch - 1) == 0 and patch >= 4:
            hint += f" or backbone.num_downs={patch.bit_length() - 1}"
        raise ValueError(f"data.patch_size={patch} is not a multiple of {multiple}, the size the network needs "
                         f"({setting}); use {hint}")
    samples = datamodule.samples
    if not samples.get("train"):
        raise ValueError("data: no training images left after the split; lower data.split.val_fraction/test_fraction "
                         "or add images")
    uses_validation = any(getattr(c, "monitor", None) for c in (cfg.get("callbacks") or {}).values()
                          if isinstance(c, (dict, DictConfig)))
    if not samples.get("val") and uses_validation and not cfg.get("validate_only"):
        raise ValueError(f"data: no validation images, but monitor={cfg.get('monitor')} selects checkpoints; set "
                         "data.split.val_fraction > 0, data.split.val={source_dir: ..., target_dir: ...} or cv.folds")


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
    config_text = redact_text(OmegaConf.to_yaml(cfg, resolve=True))
    log = log_file()
    if cfg.get("print_config", False) or log is None:
        rank_zero_info(config_text)
    elif is_global_zero_process():
        with open(log, "a") as handle:  # the whole config in the run's log; the console keeps a few lines
            handle.write(f"Config:\n{config_text}\n")
    rank_zero_info(f"Run directory: {output_dir}" + (f" (config and full log: {log})" if log else ""))
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
    if "object_scale" in model.hparams:  # segmenters: the size of the annotated objects, kept in the checkpoint
        model.hparams.object_scale = scale = datamodule.object_scale()
        if scale:
            rank_zero_info(f"Object scale of the training annotations: diameter {scale['diameter_median']:.1f} px "
                           f"(5-95%: {scale['diameter_p5']:.1f}-{scale['diameter_p95']:.1f}, {scale['n_objects']} objects)")
    check_setup(cfg, datamodule, model)  # bad settings stop here, before any file of the run is written
    save_config(cfg, output_dir / "config_resolved.yaml")
    init_report = init_weights_from(model, init_from) if init_from else None
    if cfg.get("channels_last"):
        model.use_channels_last()
    if cfg.get("compile"):
        model.compile_networks()

    callbacks = build_callbacks(cfg.get("callbacks"))
    timer, shards = ValidationTime(), RankShards()
    callbacks += [timer, shards]
    every = int(model_cfg.get("eval_every_n_epochs") or 0)
    for callback in callbacks:  # whole-field metrics exist only every `every` epochs: judge them then
        if str(getattr(callback, "monitor", "") or "").startswith("val_field/"):
            if isinstance(callback, ModelCheckpoint) and every:
                callback._every_n_epochs = every  # ModelCheckpoint keeps its every_n_epochs argument here
            elif hasattr(callback, "strict"):
                callback.strict = False
    logger_cfg = to_plain(cfg.get("logger")) or {}
    for config in logger_cfg.values():
        if resumed_wandb and config and str(config.get("_target_", "")).endswith("WandbLogger") and not config.get("id"):
            config.update(id=resumed_wandb, resume="allow")  # the resumed run continues the same W&B run
            rank_zero_info(f"W&B: continuing run {resumed_wandb}")
    loggers = build_loggers(logger_cfg)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                     plugins=[AtomicCheckpointIO()])
    rank_zero_info(datamodule.describe(trainer.world_size, trainer.max_epochs))
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
        scored = getattr(model, "last_field_epoch", trainer.current_epoch - 1)  # models without field scores: skip
        if scored != trainer.current_epoch - 1 and datamodule.samples["val"]:
            # stopped early or by the time limit: the whole-field scores of the final weights
            trainer.validate(model, datamodule=datamodule, verbose=False)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        best = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
        if cfg.get("test") and datamodule.samples.get("test"):
            trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test_patches/")})
            rank_zero_info("test_patches/*: the test split cut into crops of data.patch_size, averaged: a quick check, "
                           "not the figure to report. The whole-image scores beside baselines: python evaluate.py "
                           f"ckpt_path={best or output_dir / 'checkpoints' / 'last.ckpt'}")

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
        "validation_s": round(timer.validation_s, 1),
        "validation_share": round(timer.share, 4) if timer.share is not None else None,
        "data": datamodule.describe(trainer.world_size, trainer.max_epochs),
        "distributed": {"world_size": trainer.world_size, "ranks": shards.per_rank},
        "init_from": init_report,
        "metrics": metrics,
        "samples": {stage: [s.name for s in samples] for stage, samples in datamodule.samples.items()},
    }
    write_json(output_dir / "summary.json", summary)
    rank_zero_info(f"Run directory: {output_dir}\nBest checkpoint: {best}")
    return {**metrics, "best_model_path": best}
