"""Cell segmentation with segmentation-models-pytorch: any smp architecture and encoder, binary or multi-class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryRecall,
    MulticlassF1Score,
    MulticlassJaccardIndex,
    MulticlassPrecision,
    MulticlassRecall,
)

from stainless.data.instances import check_mode, instance_target, objects_of
from stainless.models.base import StainlessModule
from stainless.models.components.generators import build_smp
from stainless.utils.visuals import to_rgb


class SegmentationLoss(nn.Module):
    """Weighted BCE + Jaccard (default), Dice, or focal + Dice; smp's losses where they exist.

    Args:
        name: ``bce_jaccard``, ``dice`` or ``focal_dice``.
        classes: 1 for binary (logits N,1,H,W), else the number of classes (N,K,H,W).
        pos_weight: positive-class weight of the BCE term (binary), or per-class weights of the
            cross-entropy (multi-class); None for unweighted.
        bce_weight, jaccard_weight: weights of the two terms of ``bce_jaccard``.
        focal_weight, dice_weight: weights of the two terms of ``focal_dice``.
    """

    def __init__(
        self, name: str = "bce_jaccard", classes: int = 1, pos_weight: float | list[float] | None = None,
        bce_weight: float = 1.0, jaccard_weight: float = 1.0, focal_weight: float = 1.0, dice_weight: float = 1.0,
    ):
        super().__init__()
        if name not in {"bce_jaccard", "dice", "focal_dice"}:
            raise ValueError(f"loss.name: unknown segmentation loss {name!r}; use bce_jaccard, dice or focal_dice")
        self.name, self.binary = name, classes == 1
        mode = smp.losses.BINARY_MODE if self.binary else smp.losses.MULTICLASS_MODE
        self.jaccard = smp.losses.JaccardLoss(mode, from_logits=True)
        self.dice = smp.losses.DiceLoss(mode, from_logits=True)
        self.focal = smp.losses.FocalLoss(mode)
        weight = torch.as_tensor(pos_weight, dtype=torch.float32) if pos_weight is not None else None
        self.register_buffer("class_weight", weight if weight is not None else torch.empty(0), persistent=False)
        self.weights = dict(bce=bce_weight, jaccard=jaccard_weight, focal=focal_weight, dice=dice_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms and their weighted ``total``; ``target`` is (N, H, W) integer classes."""
        w = self.weights
        weight = self.class_weight if self.class_weight.numel() else None
        if self.name == "bce_jaccard":
            if self.binary:
                ce = F.binary_cross_entropy_with_logits(logits[:, 0], target.float(), pos_weight=weight)
            else:
                ce = F.cross_entropy(logits, target, weight=weight)
            jaccard = self.jaccard(logits, target)
            return {"bce": ce, "jaccard": jaccard, "total": w["bce"] * ce + w["jaccard"] * jaccard}
        dice = self.dice(logits, target)
        if self.name == "dice":
            return {"dice": dice, "total": dice}
        focal = self.focal(logits, target)
        return {"focal": focal, "dice": dice, "total": w["focal"] * focal + w["dice"] * dice}


class SoftIoU(MeanMetric):
    """IoU of probabilities without a threshold, averaged over images (foreground class for binary)."""

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        p, t = probs.flatten(1), target.flatten(1).float()
        inter = (p * t).sum(1)
        union = (p + t - p * t).sum(1)
        super().update(torch.where(union > 0, inter / union.clamp_min(1e-8), torch.ones_like(union)))


def segmentation_metrics(classes: int, threshold: float, prefix: str) -> MetricCollection:
    if classes == 1:
        metrics = {
            "iou": BinaryJaccardIndex(threshold=threshold), "dice": BinaryF1Score(threshold=threshold),
            "precision": BinaryPrecision(threshold=threshold), "recall": BinaryRecall(threshold=threshold),
        }
    else:
        metrics = {
            "iou": MulticlassJaccardIndex(classes, ignore_index=None), "dice": MulticlassF1Score(classes),
            "precision": MulticlassPrecision(classes), "recall": MulticlassRecall(classes),
        }
    return MetricCollection(metrics, prefix=prefix, compute_groups=False)


class SegmentationModule(StainlessModule):
    """smp segmentation model (``smp.create_model``) trained with the ``loss`` group.

    Args:
        arch: smp architecture (unet, unetplusplus, fpn, deeplabv3plus, linknet, manet, ...).
        backbone: the ``backbone`` config (encoder name and weights).
        in_channels: image channels (1 grayscale, 3 RGB, ...).
        classes: 1 for binary (foreground vs background), else the number of classes including background.
        loss: :class:`SegmentationLoss` arguments.
        optimizer: partial optimiser config; scheduler: partial LR scheduler config or None.
        threshold: probability threshold of the binary masks and metrics.
        n_visuals: validation images in the logged picture grid.
        lr: the learning rate the optimiser config refers to (``model.lr``).
        out_channels: alias of ``classes`` filled in by the trainer from the data; ignored if ``classes`` is set.
        object_scale: diameters of the training annotations' objects (median, 5-95%, count), recorded by ``train``
            so that evaluation sizes its post-processing from them (``segmentation.diameter=auto``).
        instances: ``none``, or an extra output channel that learns to part touching objects from the instance
            annotations: ``boundary`` (object rims) or ``distance`` (distance to the rim, 1 at each centre); see
            ``stainless.data.instances``. Evaluation and video decode it with a seeded watershed.
        instance_weight: weight of the instance head's loss (BCE, plus Dice for the sparse boundary class).
        lr_schedule: ``warmup_steps`` (linear warm-up over this many batches) and ``final_factor``: then a cosine
            decay of the learning rate to ``final_factor`` x its configured value at the end of the run (the last
            weights are then the settled ones); None: constant, or ``scheduler``.
    """

    def __init__(
        self,
        arch: str,
        backbone: Mapping[str, Any],
        in_channels: int,
        classes: int | None = None,
        loss: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        threshold: float = 0.5,
        n_visuals: int = 4,
        lr: float | None = None,
        out_channels: int | None = None,
        object_scale: Mapping[str, Any] | None = None,
        instances: str = "none",
        instance_weight: float = 1.0,
        lr_schedule: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if scheduler and lr_schedule:
            raise ValueError("model.scheduler and model.lr_schedule are both set; keep one (e.g. model.lr_schedule=null)")
        classes = classes or out_channels or 1
        self.save_hyperparameters()
        self.hparams.classes = classes
        self.instance_channels = 0 if check_mode(instances) == "none" else 1
        self.net = build_smp(backbone, arch, in_channels, classes + self.instance_channels)
        self.criterion = SegmentationLoss(classes=classes, **(loss or {}))
        self.instance_dice = smp.losses.DiceLoss(smp.losses.BINARY_MODE, from_logits=True)
        self.size_multiple = 32
        self.val_metrics = segmentation_metrics(classes, threshold, "val/")
        self.test_metrics = segmentation_metrics(classes, threshold, "test_patches/")  # crops, not whole images
        self.val_soft_iou, self.test_soft_iou = SoftIoU(), SoftIoU()
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_iou_best = MaxMetric()
        self._visual_batch = None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes, H, W) of images in [0, 1] (the instance head, if any, left out)."""
        return self.net(image)[:, : self.hparams.classes]

    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Foreground probability (N, 1, H, W) for binary models, class probabilities (N, K, H, W) otherwise."""
        logits = self(image)
        return torch.sigmoid(logits) if self.hparams.classes == 1 else logits.softmax(1)

    def maps(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 1 + instance channels, H, W): the foreground probability (any class but background), then the
        instance head's map (boundary probability or normalised distance) when the model has one; one pass."""
        logits = self.net(image)
        semantic = logits[:, : self.hparams.classes]
        foreground = torch.sigmoid(semantic) if self.hparams.classes == 1 else 1 - semantic.softmax(1)[:, :1]
        return torch.cat([foreground, torch.sigmoid(logits[:, self.hparams.classes :])], 1)

    def instance_targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The instance head's target (N, H, W), drawn from the batch's instance labels (or the connected components
        of its masks) after augmentation, so it always matches the crop. On the CPU with scipy (a GPU run copies the
        labels back: small next to the network)."""
        labels = batch.get("labels")
        maps = [instance_target(objects_of(None if labels is None else labels[i].cpu().numpy(),
                                           batch["target"][i].cpu().numpy()), self.hparams.instances)
                for i in range(len(batch["target"]))]
        return torch.from_numpy(np.stack(maps)).to(batch["target"].device)

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        logits = self.net(batch["source"])
        semantic = logits[:, : self.hparams.classes]
        losses = self.criterion(semantic, batch["target"])
        if self.instance_channels:
            target = batch["instance_target"] if "instance_target" in batch else self.instance_targets(batch)
            head, target = logits[:, self.hparams.classes], target.to(logits.dtype)
            term = F.binary_cross_entropy_with_logits(head, target)
            if self.hparams.instances == "boundary":  # rims are a few percent of the pixels
                term = term + self.instance_dice(head[:, None], target[:, None])
            losses["instances"] = term
            losses["total"] = losses["total"] + self.hparams.instance_weight * term
        return losses, semantic

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        factor = self.lr_factor()
        if factor is not None:  # set before this batch's optimiser step, which follows this method
            groups = self.optimizers().param_groups
            for group in groups:  # "initial_lr": the configured rate, kept in the optimiser's state (and checkpoints)
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor
            self.log("train/lr", groups[0]["lr"], on_step=True, on_epoch=False)
        losses, _ = self._step(batch)
        if not torch.isfinite(losses["total"]):
            raise FloatingPointError(
                f"train/loss became {losses['total'].item()} at epoch {self.current_epoch}, step {self.global_step}; "
                "lower the learning rate or check the data. The last good checkpoint is kept."
            )
        self.log_dict({f"train/loss_{k}" if k != "total" else "train/loss": v for k, v in losses.items()},
                      on_step=True, on_epoch=True, batch_size=batch["source"].shape[0], sync_dist=True)
        return losses["total"]

    def _evaluate(self, batch, metrics, soft_iou, stage: str) -> torch.Tensor:
        losses, logits = self._step(batch)
        target = batch["target"]
        if self.hparams.classes == 1:
            probs = torch.sigmoid(logits[:, 0])
            metrics.update(probs, target)
            soft_iou.update(probs, target)
        else:
            probs = logits.softmax(1)
            metrics.update(probs, target)
            soft_iou.update(1 - probs[:, 0], (target > 0).long())
        # a MeanMetric weighted by batch size: the exact mean over all images, whatever each process got
        mean_loss = self.val_loss if stage == "val" else self.test_loss
        mean_loss.update(losses["total"].detach(), weight=target.shape[0])
        self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True)
        return probs

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        probs = self._evaluate(batch, self.val_metrics, self.val_soft_iou, "val")
        if batch_idx == 0:
            n = self.hparams.n_visuals
            fg = probs if probs.ndim == 3 else 1 - probs[:, 0]
            self._visual_batch = (batch["source"][:n], fg[:n].detach(), (batch["target"][:n] > 0))

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        values["val/soft_iou"] = self.val_soft_iou.compute()
        self.val_metrics.reset()
        self.val_soft_iou.reset()
        self.log("val/iou", values.pop("val/iou"), prog_bar=True, sync_dist=True)
        self.log_dict(values, sync_dist=True)  # already reduced by torchmetrics; averages equal numbers
        if not self.trainer.sanity_checking:
            self.val_iou_best.update(self.trainer.callback_metrics["val/iou"])
            self.log("val/iou_best", self.val_iou_best.compute(), sync_dist=True)

    def on_fit_start(self) -> None:
        self.val_iou_best.reset()

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, self.test_soft_iou, "test_patches")

    def on_test_epoch_end(self) -> None:
        values = self.test_metrics.compute()
        values["test_patches/soft_iou"] = self.test_soft_iou.compute()
        self.test_metrics.reset()
        self.test_soft_iou.reset()
        self.log_dict(values, sync_dist=True)  # already reduced by torchmetrics; averages equal numbers

    def configure_optimizers(self):
        optimizer = instantiate(self.hparams.optimizer)(params=self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": instantiate(self.hparams.scheduler)(optimizer=optimizer)}

    def visuals(self) -> dict[str, torch.Tensor]:
        """Input, probability map, and an overlay: true positives white, false positives red, false negatives blue."""
        if self._visual_batch is None:
            return {}
        source, fg, truth = self._visual_batch
        pred = fg > self.hparams.threshold
        image = to_rgb(source[:, :3].mean(1, keepdim=True) if source.shape[1] > 1 else source)
        overlay = image.clone() * 0.6
        tp, fp, fn = (pred & truth), (pred & ~truth), (~pred & truth)
        for mask, colour in ((tp, (1.0, 1.0, 1.0)), (fp, (1.0, 0.1, 0.1)), (fn, (0.1, 0.4, 1.0))):
            for c in range(3):
                overlay[:, c][mask.cpu()] = colour[c]
        return {"input": image, "probability": to_rgb(fg[:, None].float()), "overlay": overlay}
