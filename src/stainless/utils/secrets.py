"""Keeping secrets (the W&B API key, tokens in the environment) out of every file a run writes.

Two rules: a config key whose name says it is a secret (``api_key``, ``token``, ``password``, ...) has its value
replaced; and any text equal to the value of a secret-looking environment variable (``WANDB_API_KEY``,
``HF_TOKEN``, ``*_SECRET``...) is replaced wherever it appears, e.g. interpolated with ``${oc.env:...}``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SECRET_NAME = re.compile(r"(api[_-]?key|token|secret|passw(or)?d|credential|private[_-]?key)", re.IGNORECASE)
REDACTED = "***"
# `api_key=VALUE`, `api_key: VALUE`, `"api_key": "VALUE"` in saved text (overrides, logs)
_ASSIGNMENT = re.compile(
    r"""(?P<key>[\w.\-/]*(?:api[_-]?key|token|secret|passw(?:or)?d|credential|private[_-]?key)[\w.\-]*["']?\s*[=:]\s*["']?)"""
    r"""(?P<value>[^\s"',}\]]+)""",
    re.IGNORECASE,
)
MIN_SECRET_LENGTH = 6  # shorter values (e.g. "1", "true") would redact ordinary text


def secret_values() -> list[str]:
    """Values of environment variables whose names look secret, longest first."""
    values = {v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, values: list[str] | None = None) -> str:
    """``text`` with secret values (default: :func:`secret_values`) and ``secret_key=value`` pairs replaced."""
    for value in secret_values() if values is None else values:
        text = text.replace(value, REDACTED)
    return _ASSIGNMENT.sub(lambda m: m["key"] + (m["value"] if m["value"] in ("null", "None", REDACTED) else REDACTED), text)


def redact(value: Any, key: str = "") -> Any:
    """A copy of plain data (dicts, lists, strings...) with secret keys' values and secret strings replaced."""
    values = secret_values()  # read the environment once, not once per string

    def walk(item: Any, name: str) -> Any:
        if isinstance(item, Mapping):
            return {k: walk(v, str(k)) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return type(item)(walk(v, name) for v in item)
        if name and SECRET_NAME.search(name) and item not in (None, "", False):
            return REDACTED
        return redact_text(item, values) if isinstance(item, str) else item

    return walk(value, key)


def redact_files(folder: str | Path, pattern: str = "*.yaml") -> None:
    """Rewrite text files (e.g. Hydra's ``.hydra/*.yaml``) with secrets replaced, where there are any."""
    for path in Path(folder).glob(pattern):
        text = path.read_text()
        cleaned = redact_text(text)
        if cleaned != text:
            path.write_text(cleaned)


@contextmanager
def redacted_argv() -> Iterator[None]:
    """The command line with secrets replaced, while loggers that record it (W&B's run metadata) start."""
    original = sys.argv[:]
    sys.argv[:] = [redact_text(arg) for arg in original]
    try:
        yield
    finally:
        sys.argv[:] = original  # a DDP launch re-runs the real command line in its other processes
