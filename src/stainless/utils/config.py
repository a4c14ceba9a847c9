"""Small helpers around OmegaConf configs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

# Settings whose type a typo on the command line can break long after start-up (a DataLoader built with
# batch_size="8a"); checked before anything runs. None is allowed where the config allows null.
EXPECTED_TYPES: dict[str, tuple[type, ...]] = {
    "seed": (int,), "test": (bool,), "tile_size": (int,), "tile_overlap": (float, int), "batch_size": (int,),
    "frame_interval": (float, int), "pixel_size": (float, int), "baselines": (bool,), "max_report_images": (int,),
    "data.patch_size": (int,), "data.patches_per_image": (int,),
    "data.samples_per_epoch": (int,), "data.val_tiles": (int,), "data.foreground_fraction": (float, int),
    "data.split.gap": (int,), "cv.folds": (int,), "cv.fold": (int,), "model.eval_every_n_epochs": (int,), "data.batch_size": (int,),
    "data.num_workers": (int,), "data.cache": (bool,), "data.split.val_fraction": (float, int),
    "data.split.test_fraction": (float, int), "data.split.seed": (int,),
    "model.lr": (float, int), "model.n_visuals": (int,), "model.threshold": (float, int),
    "loss.l1_weight": (float, int), "loss.adversarial_weight": (float, int),
    "trainer.max_epochs": (int,), "trainer.min_epochs": (int,), "trainer.check_val_every_n_epoch": (int,),
    "trainer.log_every_n_steps": (int,), "trainer.num_nodes": (int,), "trainer.deterministic": (bool, str),
    "trainer.accumulate_grad_batches": (int,), "uncertainty.n_samples": (int,),
}
TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def check_types(cfg: DictConfig) -> None:
    """Refuse settings of the wrong type (e.g. ``data.batch_size=eight``) with one line naming the key.

    Raises:
        TypeError: the first key whose value has the wrong type.
    """
    for key, types in EXPECTED_TYPES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        if isinstance(value, bool) and bool not in types:  # True is an int to Python, not to a user
            ok = False
        else:
            ok = isinstance(value, types)
        if not ok:
            wanted = " or ".join(TYPE_NAMES.get(t, t.__name__) for t in types)
            raise TypeError(f"{key}={value!r}: expected {wanted}, got {type(value).__name__} (check the command line)")


def is_global_zero_process() -> bool:
    """Rank zero of a distributed launch (before Lightning sets its ranks), or a single process."""
    return all(int(os.environ.get(name, 0)) == 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


RUN_MARKERS = ("summary.json", "config_resolved.yaml", "checkpoints", "metrics.csv", "predictions")


def ensure_new_run_dir(path: str | Path) -> None:
    """Refuse to write into a directory that already holds a stainless run or evaluation.

    Raises:
        FileExistsError: naming the directory and what is in it.
    """
    path = Path(path)
    if not is_global_zero_process():
        return  # the other processes of a DDP launch share rank zero's (fresh) directory
    found = [m for m in RUN_MARKERS if (path / m).exists()]
    if found:
        raise FileExistsError(
            f"{path}: already holds a run ({', '.join(found)}); stainless never writes into another run's "
            "directory: choose a new hydra.run.dir (or leave it to the default, one directory per run)"
        )


def to_plain(value: Any) -> Any:
    """Resolved plain Python containers from (possibly nested) OmegaConf objects.

    LightningModules receive plain values so that their checkpoints hold nothing but tensors, numbers,
    strings, lists and dicts, and load with ``torch.load(weights_only=True)``.
    """
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v) for v in value)
    return value


def flatten(mapping: Any, prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}`` (lists kept as values), for run tables such as W&B's."""
    out: dict[str, Any] = {}
    for key, value in to_plain(mapping).items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out
