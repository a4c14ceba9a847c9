"""Building Lightning loggers and callbacks from config, and the run summary."""

from __future__ import annotations

import json
import netrc
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from stainless.utils.secrets import redact


def wandb_api_key_present() -> bool:
    """Whether W&B could authenticate: WANDB_API_KEY or an api.wandb.ai entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def build_loggers(configs: Mapping[str, Any] | None) -> list:
    """Instantiate the ``logger`` group; W&B with ``offline: null`` goes offline when no API key is set."""
    loggers = []
    for name, config in (configs or {}).items():
        if not config or "_target_" not in config:
            continue
        config = dict(config)
        if config["_target_"].endswith("WandbLogger") and config.get("offline") is None:
            config["offline"] = not wandb_api_key_present()
            if config["offline"]:
                rank_zero_info(f"logger.{name}: no W&B API key, logging offline (upload later with `wandb sync`)")
        loggers.append(instantiate(config))
    return loggers


def finish_wandb(failed: bool = False) -> None:
    """End this process's W&B run, so that the next run of a multirun (same process) starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


def build_callbacks(configs: Mapping[str, Any] | None) -> list:
    """Instantiate every entry of the ``callbacks`` group that has a ``_target_``."""
    return [instantiate(c) for c in (configs or {}).values() if c and "_target_" in c]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@rank_zero_only
def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON (rank zero only), tensors turned into numbers, secrets redacted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(redact(_jsonable(data)), indent=2, allow_nan=True) + "\n")


@rank_zero_only
def save_config(cfg: Any, path: str | Path) -> None:
    """Save the resolved config beside the run's results (rank zero only), secrets redacted."""
    from omegaconf import OmegaConf

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(redact(OmegaConf.to_container(cfg, resolve=True))), path)


def describe(values: list[float]) -> dict[str, float]:
    """Mean, standard deviation, median, min, max and count of a list of per-image values."""
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "median": float(np.median(a)),
            "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}
