"""Command-line keys checked before Hydra runs: a typo gets "no key X; did you mean Y" from the known keys.

Hydra's own message for ``data.patch_sze=64`` is several lines that end in advice to add the key with ``+``,
which turns a typo into a TypeError later. Here the config is composed once with the command line's group
choices, and every ``key=value`` whose key does not exist is named with the closest existing keys.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def _keys(node: object, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return []
    out = []
    for key, value in node.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.append(name)
        out += _keys(value, name)
    return out


def unknown_keys(config_name: str, args: Sequence[str], conf_dir: Path) -> list[str]:
    """One message per ``key=value`` argument whose key the composed config lacks (with the closest keys)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    plain = [a for a in args if "=" in a and not a.startswith(("-", "+", "~", "hydra."))]
    is_group = [(conf_dir / a.split("=", 1)[0].split("@")[0]).is_dir() for a in plain]
    groups = [a for a, group in zip(plain, is_group) if group]
    checked = [a.split("=", 1)[0] for a, group in zip(plain, is_group) if not group]
    if not checked:
        return []
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg: DictConfig = compose(config_name=config_name, overrides=[g.split(",")[0] for g in groups])
    except Exception:  # a bad group choice: Hydra's own message names it
        return []
    finally:
        GlobalHydra.instance().clear()
    known = _keys(OmegaConf.to_container(cfg, resolve=False))
    messages = []
    for key in checked:
        if key in known:
            continue
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        near = difflib.get_close_matches(key, known, n=3, cutoff=0.75)
        siblings = [k for k in known if k.rsplit(".", 1)[0] == parent and "." in k] if parent else []
        hint = (f"did you mean {' or '.join(near)}?" if near else
                f"the keys of {parent} are {', '.join(k.rsplit('.', 1)[1] for k in siblings[:12])}" if siblings else
                "it is not a setting of this command")
        messages.append(f"no key {key!r} in the config; {hint} (to add a new key on purpose: +{key}=...)")
    return messages


def check_overrides(conf_dir: Path, config_name: str, args: Sequence[str] | None = None) -> None:
    """Exit with code 1 and one line per unknown key before Hydra runs; return silently otherwise."""
    messages = unknown_keys(config_name, sys.argv[1:] if args is None else args, Path(conf_dir))
    if messages:
        for message in messages:
            print(f"Error: {message}", file=sys.stderr)
        sys.exit(1)
