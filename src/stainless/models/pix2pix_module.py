"""pix2pix conditional GAN for virtual labeling, with Lightning manual optimisation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MaxMetric, MinMetric, SumMetric

from stainless.metrics.image import HIGHER_IS_BETTER, ImageMetrics, LPIPSScorer, image_maps
from stainless.metrics.nuclei import NucleusDetector, outline_nuclei, score_nuclei
from stainless.models.base import StainlessModule
from stainless.models.components.generators import CLASSIC, build_generator
from stainless.models.components.patchgan import PatchGANDiscriminator
from stainless.utils.pretrained import PretrainedWeightsMissing, lpips_missing_message
from stainless.visuals import image_to_image_panels


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
        loss: ``adversarial`` (vanilla/lsgan/hinge), ``adversarial_weight``, ``l1_weight``, ``perceptual_weight``.
        optimizer_g, optimizer_d: partial optimiser configs (``_target_``, ``_partial_: true``, ...).
        scheduler: partial LR scheduler config applied to both optimisers, stepped once per epoch; or None.
        gradient_clip_val: clip both networks' gradients to this norm (the Trainer's option does not apply
            under manual optimisation).
        metrics: ``lpips`` (bool), ``lpips_net``, ``lpips_trunk`` (path to the trunk's weights).
        nuclei: ``enabled`` and ``detector`` (:class:`NucleusDetector` options): validation also detects nuclei
            in predictions and targets (or uses the batch's instance labels as the truth) and logs
            ``val/nuclei_f1``, ``val/hallucinated`` and ``val/missed`` (counts over the validation set).
        n_visuals: images shown in the logged picture grids.
        lr: the learning rate the optimiser configs refer to (``model.lr``, one key for sweeps); not used directly.
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
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = build_generator(generator, in_channels, out_channels)
        self.discriminator = PatchGANDiscriminator(in_channels + out_channels, **discriminator)
        self.size_multiple = 2 ** generator.get("num_downs", 7) if generator["name"] == CLASSIC else 32

        metrics = dict(metrics or {})
        self.lpips = LPIPSScorer(metrics.get("lpips_net", "alex"), metrics.get("lpips_trunk"), metrics.get("lpips", True))
        if loss.get("perceptual_weight", 0) and not self.lpips.available:
            raise PretrainedWeightsMissing("loss.perceptual_weight > 0 needs LPIPS. " + lpips_missing_message(self.lpips.net_name))
        self.val_metrics = ImageMetrics(self.lpips, prefix="val/")
        self.test_metrics = ImageMetrics(self.lpips, prefix="test/")
        best = {name: HIGHER_IS_BETTER[name] for name in self.val_metrics.keys(keep_base=True)}
        self.nuclei_enabled = bool((nuclei or {}).get("enabled", False))
        self._detector: NucleusDetector | None = None  # built on first use: a checkpoint detector loads a file
        if self.nuclei_enabled:
            # true positives, hallucinated, missed: sums reduced across processes, F1 computed from the totals
            self.val_nuclei = nn.ModuleDict({k: SumMetric() for k in ("tp", "hallucinated", "missed")})
            best.update({name: HIGHER_IS_BETTER[name] for name in ("nuclei_f1", "hallucinated", "missed")})
        self.val_best = nn.ModuleDict({name: MaxMetric() if high else MinMetric() for name, high in best.items()})
        self._visual_batch: tuple[torch.Tensor, ...] | None = None

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

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        weights = self.hparams.loss
        x, y = batch["source"] * 2 - 1, batch["target"] * 2 - 1
        opt_g, opt_d = self.optimizers()
        fake = self.generator(x)

        kind = weights["adversarial"]
        adversarial = weights.get("adversarial_weight", 1.0) != 0
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
            loss_g = weights.get("adversarial_weight", 1.0) * loss_adv + weights.get("l1_weight", 100.0) * loss_l1
            logs = {"train/loss_d": loss_d, "train/loss_g_adv": loss_adv, "train/loss_g_l1": loss_l1}
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
        for best in self.val_best.values():
            best.reset()

    @property
    def detector(self) -> NucleusDetector:
        if self._detector is None:
            self._detector = NucleusDetector.from_config(self.hparams.nuclei.get("detector"))
        return self._detector

    def nuclei_labels(self, pred: torch.Tensor, target: torch.Tensor, labels: torch.Tensor | None) -> list[tuple]:
        """Per image: (true labels, predicted labels, score); truth from ``labels`` when given, else detected."""
        out = []
        for i in range(pred.shape[0]):
            true = labels[i].cpu().numpy() if labels is not None else self.detector(target[i].float().cpu().numpy())
            found = self.detector(pred[i].float().cpu().numpy())
            out.append((true, found, score_nuclei(true, found, thresholds=(0.5,))))
        return out

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred = self(batch["source"]).clamp(0, 1)
        self.val_metrics.update(pred, batch["target"])
        nuclei = None
        if self.nuclei_enabled:
            nuclei = self.nuclei_labels(pred, batch["target"], batch.get("labels"))
            for key in ("tp", "hallucinated", "missed"):
                self.val_nuclei[key].update(float(sum(score[key] for _, _, score in nuclei)))
        if batch_idx == 0:
            n = self.hparams.n_visuals
            self._visual_batch = (batch["source"][:n], pred[:n], batch["target"][:n], nuclei[:n] if nuclei else None)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()  # already reduced across processes by torchmetrics
        self.val_metrics.reset()
        self.log("val/ssim", values.pop("val/ssim"), prog_bar=True, sync_dist=True)
        if self.nuclei_enabled:
            counts = {key: metric.compute() for key, metric in self.val_nuclei.items()}
            for metric in self.val_nuclei.values():
                metric.reset()
            errors = 2 * counts["tp"] + counts["hallucinated"] + counts["missed"]
            values["val/nuclei_f1"] = 2 * counts["tp"] / errors if errors > 0 else torch.ones_like(errors)
            values["val/hallucinated"], values["val/missed"] = counts["hallucinated"], counts["missed"]
        self.log_dict(values, sync_dist=True)  # already reduced by torchmetrics; averages equal numbers
        values["val/ssim"] = self.trainer.callback_metrics["val/ssim"]
        if self.trainer.sanity_checking:
            return
        for name, best in self.val_best.items():
            best.update(values[f"val/{name}"])
            self.log(f"val/{name}_best", best.compute(), sync_dist=True)

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
        """Panels of the first validation batch, each (N, 3, H, W) in [0, 1], for the image-logging callback."""
        if self._visual_batch is None:
            return {}
        source, pred, target, nuclei = self._visual_batch
        panels = image_to_image_panels(source, pred, target, image_maps(pred, target, self.lpips))
        if nuclei:
            panels["nuclei"] = torch.stack([outline_nuclei(p, t, f, s) for p, (t, f, s) in zip(pred.cpu(), nuclei)])
        return panels
