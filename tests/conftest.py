"""Shared fixtures: tiny generated data and composed, shrunk Hydra configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one of `make test`'s workers, one per core: one thread each
    import torch

    torch.set_num_threads(1)

CONF = Path(__file__).resolve().parents[1] / "conf"

TINY = [
    "data.patch_size=32",
    "data.patches_per_image=2",
    "data.batch_size=4",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_model_summary=false",
    "print_config=false",
]
# Applied after composition where the key exists (they depend on the chosen group options).
TINY_IF_PRESENT = {"data.synthetic.n_images": 6, "data.synthetic.size": 64, "backbone.num_downs": 5, "backbone.ngf": 8, "callbacks.progress_bar.refresh_rate": 0,
                   "model.discriminator.ndf": 8, "model.discriminator.n_layers": 2}


def compose_config(config_name: str, overrides: list[str], tmp_path: Path) -> DictConfig:
    """Compose a config as train.py/evaluate.py would, with paths inside ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.data_dir = str(tmp_path / "data")
        cfg.paths.log_dir = str(tmp_path / "outputs")
        cfg.paths.output_dir = str(tmp_path / "run")
        del cfg.hydra
    (tmp_path / "run").mkdir(parents=True, exist_ok=True)
    GlobalHydra.instance().clear()
    return cfg


def tiny_train_config(tmp_path: Path, *overrides: str, run: str = "run") -> DictConfig:
    """A tiny training config (``TINY``, then ``TINY_IF_PRESENT`` where the chosen groups have the key and the
    overrides do not set it) writing into ``tmp_path / run``."""
    cfg = compose_config("train", [*TINY, *overrides], tmp_path)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / run)
        for key, value in TINY_IF_PRESENT.items():
            explicit = any(o.split("=")[0].lstrip("+~") == key for o in overrides)
            if OmegaConf.select(cfg, key) is not None and not explicit:
                OmegaConf.update(cfg, key, value)
    Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
    return cfg


def run_config_factory(config_name: str, tmp_path: Path, default_run: str):
    """Factory of composed ``config_name`` configs (eval, export) each writing into ``tmp_path / run``."""

    def make(*overrides: str, run: str = default_run) -> DictConfig:
        cfg = compose_config(config_name, list(overrides), tmp_path)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / run)
        Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
        return cfg

    return make


@pytest.fixture
def cfg_train(tmp_path: Path):
    """Factory: a tiny virtual-labeling training config; extra overrides appended."""
    return lambda *overrides, run="run": tiny_train_config(tmp_path, *overrides, run=run)


@pytest.fixture
def cfg_eval(tmp_path: Path):
    return run_config_factory("eval", tmp_path, "eval")
