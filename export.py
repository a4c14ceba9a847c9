"""Export a checkpoint: ``python export.py ckpt_path=PATH format=bioimageio|onnx|torchscript [output=PATH]``."""

import hydra
from omegaconf import DictConfig

from stainless.export import export
from stainless.utils.errors import run_cli


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run_cli(export, cfg)


if __name__ == "__main__":
    main()
