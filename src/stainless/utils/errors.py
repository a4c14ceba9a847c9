"""Errors a user can act on: one line on the console, the traceback in the run's log file."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from stainless.utils.pretrained import PretrainedWeightsMissing

# Raised with a message naming the file or setting at fault (bad data, bad settings, missing weights, a run
# directory in use, a diverging loss): the traceback would add nothing for the user.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, TypeError, FileNotFoundError, FileExistsError, PretrainedWeightsMissing, FloatingPointError,
)


def log_file() -> str | None:
    """The file the run's log goes to (Hydra's job log), or None outside a Hydra run."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
    return None


def run_cli(function: Callable[..., Any], *args: Any) -> Any:
    """Call an entry function; a known user error exits with code 1 and one line, the traceback going to the run's
    log file only. ``HYDRA_FULL_ERROR=1`` (or any error of another kind) keeps the full traceback on the console.
    Inside a multirun the error is raised as usual, so the sweeper sees it."""
    try:
        return function(*args)
    except USER_ERRORS as error:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or multirun:
            raise
        log = log_file()
        if log:
            with open(log, "a") as handle:
                handle.write("".join(traceback.format_exception(error)))
        where = f" (traceback in {log})" if log else ""
        print(f"Error: {error}{where}", file=sys.stderr)
        sys.exit(1)
