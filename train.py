"""Train a stainless model: ``python train.py [experiment=...] [group=option] [key=value ...]``."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from stainless.train import train
from stainless.utils.errors import run_cli
from stainless.utils.overrides import check_overrides


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_cli(train, cfg)
    # Sweepers (Optuna, ...) optimise what main returns.
    return metrics.get(cfg.get("optimized_metric")) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    check_overrides(Path(__file__).parent / "conf", "train")  # a mistyped key: "no key X; did you mean Y" before Hydra's own message
    main()
