"""stainless: configuration-driven training for microscopy (virtual labeling and cell segmentation)."""

import os

from omegaconf import OmegaConf

# `${stainless.cwd:}` in configs: the directory the user launched from (resolvable before Hydra's runtime
# values exist, e.g. while a multirun sets up its sweep directory).
OmegaConf.register_new_resolver("stainless.cwd", os.getcwd, replace=True)

__version__ = "0.1.0"
