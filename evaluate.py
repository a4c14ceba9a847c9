"""Evaluate a checkpoint: ``python evaluate.py ckpt_path=PATH [input=FOLDER_OR_FILE] [target=...]``."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from stainless.evaluate import evaluate
from stainless.utils.errors import run_cli
from stainless.utils.overrides import check_overrides


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_cli(evaluate, cfg)


if __name__ == "__main__":
    check_overrides(Path(__file__).parent / "conf", "eval")  # a mistyped key: "no key X; did you mean Y" before Hydra's own message
    main()
