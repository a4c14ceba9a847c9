"""Send the module's picture panels to every configured logger and to PNG files, from rank zero only."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from stainless.utils.visuals import grid


class ImageLogger(L.Callback):
    """After validation, asks ``pl_module.visuals()`` for panels and logs them as one grid picture.

    The grid has a row per sample and a column per panel (input, prediction, target, error and metric maps).
    It goes to W&B (an image with the panel names as caption), to TensorBoard (``add_image``) and to
    ``<dirpath>/epoch_XXX.png``. CSV loggers have no images; the PNG files serve them.

    Args:
        dirpath: folder for the PNG files (the run directory's ``images``).
        every_n_epochs: log every n-th validation epoch (and always the last).
        key: name of the picture in the loggers.
    """

    def __init__(self, dirpath: str, every_n_epochs: int = 1, key: str = "val/visuals"):
        self.dirpath = Path(dirpath)
        self.every_n_epochs = max(1, every_n_epochs)
        self.key = key

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the module's own epoch-end hook (callbacks' epoch-end hooks run before it), so the pictures of
        # a whole-field validation made there are this epoch's
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if epoch % self.every_n_epochs and not last:
            return
        panels = pl_module.visuals()
        if not panels:
            return
        picture = grid(panels)
        caption = "columns: " + ", ".join(panels)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        iio.imwrite(self.dirpath / f"epoch_{epoch:03d}.png", picture)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=self.key, images=[picture], caption=[caption], step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(self.key, picture, global_step=trainer.global_step, dataformats="HWC")
