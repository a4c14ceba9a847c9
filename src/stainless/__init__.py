"""stainless: configuration-driven training for microscopy (virtual labeling and cell segmentation)."""

import os

from omegaconf import OmegaConf

# `${stainless.cwd:}` in configs: the directory the user launched from (resolvable before Hydra's runtime
# values exist, e.g. while a multirun sets up its sweep directory).
OmegaConf.register_new_resolver("stainless.cwd", os.getcwd, replace=True)

def metric_direction(metric: str) -> str:
    """``maximize`` or ``minimize`` for a logged metric name such as ``val/mse_best`` (for sweepers): the
    metrics' own table (``HIGHER_IS_BETTER``) decides; losses are minimised; anything else (IoU, Dice...) is
    maximised."""
    from stainless.metrics.image import HIGHER_IS_BETTER  # imported when a sweep resolves its direction

    base = metric.split("/")[-1].removesuffix("_best")
    return "minimize" if base.startswith("loss") or HIGHER_IS_BETTER.get(base, True) is False else "maximize"


def sweep_group(task_name: str) -> str:
    """``<task>-<sweep directory name>`` inside a multirun (one W&B group per sweep), else ``""``."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra = HydraConfig.get()
        if hydra.mode == RunMode.MULTIRUN:
            return f"{task_name}-{os.path.basename(str(hydra.sweep.dir).rstrip('/'))}"
    except ValueError:  # no Hydra runtime (a config composed in a test or a notebook)
        pass
    return ""


OmegaConf.register_new_resolver("stainless.direction", metric_direction, replace=True)
OmegaConf.register_new_resolver("stainless.sweep_group", sweep_group, replace=True)

__version__ = "0.1.0"
