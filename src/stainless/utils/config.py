"""Small helpers around OmegaConf configs."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


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
