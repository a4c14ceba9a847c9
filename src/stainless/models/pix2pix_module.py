"""pix2pix conditional GAN for virtual labeling, with Lightning manual optimisation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MaxMetric, MinMetric
from torchmetrics.functional.image import structural_similarity_index_measure

from stainless.inference.nuclei import NucleusDetector
from stainless.inference.tiling import predict_tiled
from stainless.metrics.image import HIGHER_IS_BETTER, ImageMetrics, LPIPSScorer, image_maps, per_image_metrics
from stainless.metrics.nuclei import outline_nuclei, score_nuclei
from stainless.models.base import StainlessModule
from stainless.models.components.generators import CLASSIC, build_generator
from stainless.models.components.patchgan import PatchGANDiscriminator
from stainless.utils.pretrained import PretrainedWeightsMissing, lpips_missing_message
from stainless.utils.visuals import image_to_image_panels


def adversarial_loss(kind: str, logits: torch.Tensor, real: bool, for_discriminator: bool) -> torch.Tensor:
    """GAN loss on PatchGAN logits: ``vanilla`` (BCE), ``lsgan`` (least squares) or ``hinge``."""
    if kind == "vanilla":
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))
    if kind == "lsgan":
        return F.mse_loss(logits, torch.full_like(logits, float(real)))
    if kind == "hinge":
        if not for_discriminator:
            return -logits.mean()
        return F.relu(1 - logits).mean() if real else F.relu(1 + logits).mean()
    raise ValueError(f"loss.adversarial: unknown GAN loss {kind!r}; use vanilla, lsgan or hinge")


class Pix2PixModule(StainlessModule):
    """Conditional GAN (pix2pix): generator maps input to target, PatchGAN judges (input, output) pairs.

    Images enter and leave in [0, 1]; the networks work in [-1, 1] (tanh output).

    Args:
        in_channels, out_channels: channels of input and target images.
        generator: the ``backbone`` config (``name: pix2pix_unet`` or an smp encoder).
        discriminator: PatchGAN options (``ndf``, ``n_layers``, ``norm``).
        loss: ``adversarial`` (vanilla/lsgan/hinge), ``adversarial_weight``, ``l1_weight``, ``perceptual_weight``,
            ``ssim_weight`` (a 1 - SSIM term), ``adversarial_warmup`` (batches trained without the GAN term and
            without training the discriminator).
        optimizer_g, optimizer_d: partial optimiser configs (``_target_``, ``_partial_: true``, ...).
        scheduler: partial LR scheduler config applied to both optimisers, stepped once per epoch; or None.
        gradient_clip_val: clip both networks' gradients to this norm (the Trainer's option does not apply
            under manual optimisation).
        metrics: ``lpips`` (bool), ``lpips_net``, ``lpips_trunk`` (path to the trunk's weights).
        nuclei: ``enabled`` and ``detector`` (:class:`NucleusDetector` options): the whole-field validation also
            detects nuclei in predictions and targets (or takes the fields' instance labels as the truth) and logs
            ``val_field/nuclei_f1``, ``val_field/hallucinated`` and ``val_field/missed`` (counts over the fields).
        n_visuals: images shown in the logged picture grids.
        eval_every_n_epochs: every epoch validates on the data module's fixed validation tiles (MSE, MAE, PSNR,
            SSIM, Pearson r: ``val/...``); every this many epochs, at the last epoch and in ``trainer.validate``,
            the whole validation fields are also predicted in tiles and scored with LPIPS and nuclei matching
            (``val_field/...``). 0: only at the end.
        lr: the learning rate the optimiser configs refer to (``model.lr``, one key for sweeps); not used directly.
        lr_schedule: ``warmup_steps`` (linear warm-up over this many batches) and ``final_factor``: then a cosine
            decay of both optimisers' learning rates to ``final_factor`` x their configured rate at the end of the
            run, whichever of ``trainer.max_epochs`` and ``trainer.max_time`` ends it first; None: constant.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        generator: Mapping[str, Any],
        discriminator: Mapping[str, Any],
        loss: Mapping[str, Any],
        optimizer_g: Mapping[str, Any],
        optimizer_d: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        gradient_clip_val: float | None = None,
        metrics: Mapping[str, Any] | None = None,
        n_visuals: int = 4,
        lr: float | None = None,
        nuclei: Mapping[str, Any] | None = None,
        eval_every_n_epochs: int = 10,
        lr_schedule: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        if scheduler and lr_schedule:
            raise ValueError("model.scheduler and model.lr_schedule are both set; keep one (e.g. model.lr_schedule=null)")
        self.generator = build_generator(generator, in_channels, out_channels)
        self.discriminator = PatchGANDiscriminator(in_channels + out_channels, **discriminator)
        self.size_multiple = 2 ** generator.get("num_downs", 7) if generator["name"] == CLASSIC else 32

        metrics = dict(metrics or {})
        self.lpips = LPIPSScorer(metrics.get("lpips_net", "alex"), metrics.get("lpips_trunk"), metrics.get("lpips", True))
        if loss.get("perceptual_weight", 0) and not self.lpips.available:
            raise PretrainedWeightsMissing("loss.perceptual_weight > 0 needs LPIPS. " + lpips_missing_message(self.lpips.net_name))
        self.val_metrics = ImageMetrics(None, prefix="val/")  # the fixed tiles, every epoch: no LPIPS, no nuclei
        self.test_metrics = ImageMetrics(self.lpips, prefix="test_patches/")  # crops, not whole images
        self.nuclei_enabled = bool((nuclei or {}).get("enabled", False))
        self._detector: NucleusDetector | None = None  # built on first use: a checkpoint detector loads a file
        best = {name: HIGHER_IS_BETTER[name] for name in self.val_metrics.keys(keep_base=True)}
        # whole fields, every few epochs: the metrics of evaluate.py (means over fields of per-field values)
        self.field_names = [*FIELD_METRICS, *(["lpips"] if self.lpips.available else [])]
        if self.nuclei_enabled:  # counts summed over fields, F1 from the totals
            self.field_names += ["nuclei_tp", "hallucinated", "missed"]
        field_best = {name: HIGHER_IS_BETTER[name] for name in self.field_names if name != "nuclei_tp"}
        if self.nuclei_enabled:
            field_best["nuclei_f1"] = True
        self.val_best = nn.ModuleDict({name: MaxMetric() if high else MinMetric() for name, high in best.items()})
        self.field_best = nn.ModuleDict({name: MaxMetric() if high else MinMetric() for name, high in field_best.items()})
        self._visual_batch: tuple | None = None
        self._field_visual: tuple | None = None
        self._field_truth: dict = {}  # field name -> nuclei detected in its target (when it has no label image)
        self.last_field_epoch: int | None = None  # the last training epoch whose fields were scored

    # -- inference --------------------------------------------------------------------------------------------

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        """Predict targets in [0, 1] from inputs in [0, 1] (N, C, H, W)."""
        return (self.generator(source * 2 - 1) + 1) / 2

    # -- training ---------------------------------------------------------------------------------------------

    def _check_finite(self, name: str, value: torch.Tensor) -> None:
        if not torch.isfinite(value):
            raise FloatingPointError(
                f"{name} became {value.item()} at epoch {self.current_epoch}, step {self.global_step}; "
                "lower the learning rate or check the data. The last good checkpoint is kept."
            )

    def _optimise(self, optimizer, loss: torch.Tensor, name: str) -> None:
        """One manual optimiser step: check, backward, clip (if configured), step."""
        self._check_finite(name, loss)
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.hparams.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_val, gradient_clip_algorithm="norm")
        optimizer.step()

    def _schedule_lr(self) -> None:
        """Warm-up then cosine decay of both optimisers' learning rates (``lr_schedule``), set before each batch."""
        factor = self.lr_factor()
        if factor is None:
            return
        for optimizer, config in zip(self.optimizers(), (self.hparams.optimizer_g, self.hparams.optimizer_d)):
            for group in optimizer.param_groups:
                group["lr"] = config["lr"] * factor
        self.log("train/lr_g", self.hparams.optimizer_g["lr"] * factor, on_step=True, on_epoch=False)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._schedule_lr()
        weights = self.hparams.loss
        x, y = batch["source"] * 2 - 1, batch["target"] * 2 - 1
        opt_g, opt_d = self.optimizers()
        fake = self.generator(x)

        kind = weights["adversarial"]
        adversarial_weight = weights.get("adversarial_weight", 1.0)
        warmup = weights.get("adversarial_warmup", 0)
        if warmup and self.trainer.fit_loop.epoch_loop.total_batch_idx < warmup:
            adversarial_weight = 0.0  # discriminator warm-up: the generator learns the regression first
        adversarial = adversarial_weight != 0
        loss_d = torch.zeros((), device=x.device)
        if adversarial:  # with adversarial_weight 0 (loss=l1) the discriminator is not trained at all
            with self.toggled_optimizer(opt_d):
                real_logits = self.discriminator(torch.cat([x, y], 1))
                fake_logits = self.discriminator(torch.cat([x, fake.detach()], 1))
                loss_d = 0.5 * (
                    adversarial_loss(kind, real_logits, True, True) + adversarial_loss(kind, fake_logits, False, True)
                )
                self._optimise(opt_d, loss_d, "train/loss_d")

        with self.toggled_optimizer(opt_g):
            loss_adv = (adversarial_loss(kind, self.discriminator(torch.cat([x, fake], 1)), True, False) if adversarial
                        else torch.zeros((), device=x.device))
            loss_l1 = F.l1_loss(fake, y)
            loss_g = adversarial_weight * loss_adv + weights.get("l1_weight", 100.0) * loss_l1
            logs = {"train/loss_d": loss_d, "train/loss_g_adv": loss_adv, "train/loss_g_l1": loss_l1}
            if weights.get("ssim_weight", 0):  # structure term: 1 - SSIM of the [0, 1] images
                loss_s = 1 - structural_similarity_index_measure((fake + 1) / 2, (y + 1) / 2, data_range=1.0)
                loss_g = loss_g + weights["ssim_weight"] * loss_s
                logs["train/loss_g_ssim"] = loss_s
            if weights.get("perceptual_weight", 0):
                loss_p = self.lpips.differentiable((fake + 1) / 2, (y + 1) / 2).mean()
                loss_g = loss_g + weights["perceptual_weight"] * loss_p
                logs["train/loss_g_perceptual"] = loss_p
            self._optimise(opt_g, loss_g, "train/loss_g")
        logs["train/loss_g"] = loss_g
        self.log_dict(logs, prog_bar=False, on_step=True, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        self.log("train/l1", loss_l1, prog_bar=True, on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True)

        if batch_idx + 1 == self.trainer.num_training_batches:
            self._step_schedulers()

    def _step_schedulers(self) -> None:
        # Manual optimisation: schedulers are stepped by hand, once per epoch, after the epoch's last batch
        # and so before that epoch's checkpoint is written (a resumed run continues the same schedule).
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()

    def configure_optimizers(self):
        hp = self.hparams
        opt_g = instantiate(hp.optimizer_g)(params=self.generator.parameters())
        opt_d = instantiate(hp.optimizer_d)(params=self.discriminator.parameters())
        if not hp.scheduler:
            return [opt_g, opt_d]
        return [opt_g, opt_d], [instantiate(hp.scheduler)(optimizer=opt_g), instantiate(hp.scheduler)(optimizer=opt_d)]

    # -- validation and test ----------------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        for best in [*self.val_best.values(), *self.field_best.values()]:
            best.reset()

    @property
    def detector(self) -> NucleusDetector:
        if self._detector is None:
            self._detector = NucleusDetector.from_config(self.hparams.nuclei.get("detector"))
        return self._detector

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred = self(batch["source"]).clamp(0, 1)
        self.val_metrics.update(pred, batch["target"])
        if batch_idx == 0:
            n = self.hparams.n_visuals
            self._visual_batch = (batch["source"][:n], pred[:n], batch["target"][:n], None)

    def _fields_due(self) -> bool:
        trainer = self.trainer
        if trainer.sanity_checking or getattr(trainer, "datamodule", None) is None:
            return False
        if trainer.state.fn == "validate":  # trainer.validate(): the whole-field scores of these weights
            return True
        every, epoch = self.hparams.get("eval_every_n_epochs", 10), self.current_epoch + 1
        return bool(every and epoch % every == 0) or epoch == trainer.max_epochs

    @torch.no_grad()
    def validate_fields(self, fields: Any) -> dict[str, torch.Tensor]:
        """Predict the whole validation fields in tiles and score them as ``evaluate.py`` does.

        Field ``i`` is predicted by rank ``i % world_size``; one (fields x metrics) table is gathered from all
        ranks, so every rank returns the same values (no collective depends on how many fields a rank had).

        Args:
            fields: a dataset with ``samples``, ``patch_size`` and ``load(i)`` (the data module's validation set).

        Returns:
            ``val_field/<metric>``: means over fields of MSE, MAE, PSNR, SSIM, Pearson r (and LPIPS); with nuclei,
            ``nuclei_f1`` from the summed counts, ``hallucinated`` and ``missed`` (sums over fields).
        """
        predict = lambda batch: self(batch).clamp(0, 1)
        rank, world = self.global_rank, max(self.trainer.world_size, 1)
        table = torch.zeros(len(fields.samples), len(self.field_names), device=self.device, dtype=torch.float64)
        for i in range(rank, len(fields.samples), world):
            loaded = fields.load(i)
            source = torch.from_numpy(loaded.source).to(self.device)
            pred = predict_tiled(predict, source, 2 * fields.patch_size, 0.25, 4, self.size_multiple)[None]
            target = torch.from_numpy(loaded.target).to(self.device)[None]
            row = per_image_metrics(pred, target, self.lpips)[0]
            nuclei = None
            if self.nuclei_enabled:
                true = loaded.labels
                if true is None:  # the targets do not change: detect their nuclei once per field
                    name = getattr(fields.samples[i], "name", i)
                    if name not in self._field_truth:
                        self._field_truth[name] = self.detector(loaded.target)
                    true = self._field_truth[name]
                found = self.detector(pred[0].float().cpu().numpy())
                score = score_nuclei(true, found, thresholds=(0.5,))
                row.update(nuclei_tp=score["tp"], hallucinated=score["hallucinated"], missed=score["missed"])
                nuclei = (true, found, score)
            table[i] = torch.tensor([float(row[name]) for name in self.field_names], dtype=torch.float64)
            if i == rank:  # a picture of this field's centre, nuclei outlined, for the image logger
                self._field_visual = _centre_crop(source[None], pred, target, nuclei, 2 * fields.patch_size)
        if world > 1:
            table = self.all_gather(table).sum(0)  # each field's row is filled by exactly one rank
        values = {}
        for k, name in enumerate(self.field_names):
            column = table[:, k]
            values[f"val_field/{name}"] = column.sum() if name in ("nuclei_tp", "hallucinated", "missed") else column.mean()
        if self.nuclei_enabled:
            tp = values.pop("val_field/nuclei_tp")
            errors = 2 * tp + values["val_field/hallucinated"] + values["val_field/missed"]
            values["val_field/nuclei_f1"] = 2 * tp / errors if errors > 0 else torch.ones_like(errors)
        return {k: v.float() for k, v in values.items()}

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()  # already reduced across processes by torchmetrics
        self.val_metrics.reset()
        self.log("val/ssim", values.pop("val/ssim"), prog_bar=True, sync_dist=True)
        self.log_dict(values, sync_dist=True)  # already reduced by torchmetrics; averages equal numbers
        values["val/ssim"] = self.trainer.callback_metrics["val/ssim"]
        field_values: dict[str, torch.Tensor] = {}
        self._field_visual = None
        if self._fields_due() and self.trainer.datamodule.datasets["val"].samples:
            field_values = self.validate_fields(self.trainer.datamodule.datasets["val"])
            self.log_dict(field_values, sync_dist=True)  # the same on every rank
            if self.trainer.state.fn == "fit":
                self.last_field_epoch = self.current_epoch
        if self.trainer.sanity_checking or self.trainer.state.fn != "fit":
            return
        for name, best in self.val_best.items():
            best.update(values[f"val/{name}"])
            self.log(f"val/{name}_best", best.compute(), sync_dist=True)
        for name, best in self.field_best.items():
            if f"val_field/{name}" in field_values:
                best.update(field_values[f"val_field/{name}"])
            if best.update_called:
                self.log(f"val_field/{name}_best", best.compute(), sync_dist=True)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred = self(batch["source"]).clamp(0, 1)
        self.test_metrics.update(pred, batch["target"])

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), sync_dist=True)
        self.test_metrics.reset()

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self(batch["source"]).clamp(0, 1)

    # -- pictures ---------------------------------------------------------------------------------------------

    def visuals(self) -> dict[str, torch.Tensor]:
        """Panels for the image-logging callback, each (N, 3, H, W) in [0, 1]: the first validation tiles, or,
        after a whole-field validation, the centre of the first field with its nuclei outlined."""
        if getattr(self, "_field_visual", None) is not None:
            source, pred, target, nuclei = self._field_visual
        elif self._visual_batch is not None:
            source, pred, target, nuclei = self._visual_batch
        else:
            return {}
        panels = image_to_image_panels(source, pred, target, image_maps(pred, target, self.lpips))
        if nuclei:
            panels["nuclei"] = torch.stack([outline_nuclei(p, t, f, s) for p, (t, f, s) in zip(pred.cpu(), nuclei)])
        return panels


FIELD_METRICS = ("mse", "mae", "psnr", "ssim", "pearson")


def _centre_crop(source: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, nuclei: tuple | None, size: int):
    """The central ``size`` x ``size`` window of a field's input, prediction, target and nuclei labels."""
    height, width = source.shape[-2:]
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    window = (slice(top, top + size), slice(left, left + size))
    crop = lambda t: t[(..., *window)].cpu()
    if nuclei is not None:
        true, found, score = nuclei
        nuclei = [(true[window], found[window], score)]
    return crop(source), crop(pred), crop(target), nuclei
