"""Export a checkpoint: ``python export.py ckpt_path=PATH format=bioimageio|onnx|torchscript [output=PATH]``."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from stainless.export import export
from stainless.utils.errors import run_cli
from stainless.utils.overrides import check_overrides


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run_cli(export, cfg)


if __name__ == "__main__":
    check_overrides(Path(__file__).parent / "conf", "export")  # a mistyped key: "no key X; did you mean Y" before Hydra's own message
    main()
