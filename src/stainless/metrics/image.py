"""Image-to-image metrics (MSE, MAE, PSNR, SSIM, Pearson r, LPIPS), their per-pixel maps, DDP-safe aggregates.

All images are float tensors (N, C, H, W) in [0, 1].
"""

from __future__ import annotations

import re
import warnings

import torch
from torch import nn
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

from stainless.utils.pretrained import lpips_missing_message, lpips_trunk_file, warn_once


def pearson_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each image's pixels (N,); 0 where either image is constant."""
    p = pred.flatten(1).double()
    t = target.flatten(1).double()
    p = p - p.mean(1, keepdim=True)
    t = t - t.mean(1, keepdim=True)
    denom = p.norm(dim=1) * t.norm(dim=1)
    return torch.where(denom > 0, (p * t).sum(1) / denom.clamp_min(1e-12), torch.zeros_like(denom)).float()


class PearsonPerImage(MeanMetric):
    """Mean over images of the per-image Pearson r (sum and count are reduced across processes)."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        super().update(pearson_per_image(preds, target))


class LPIPSScorer:
    """LPIPS distances and spatial maps, or None for both when the trunk weights are not on this machine.

    Deliberately not an ``nn.Module`` attribute of the LightningModules: the frozen LPIPS network stays out
    of checkpoints. It follows the device of its inputs.

    Args:
        net: ``alex``, ``vgg`` or ``squeeze``.
        trunk_path: explicit path of the torchvision weights of the trunk (else torch hub's cache is searched).
        enabled: False skips LPIPS without a warning.
    """

    def __init__(self, net: str = "alex", trunk_path: str | None = None, enabled: bool = True):
        self.net_name = net
        self.model: nn.Module | None = None
        if not enabled:
            return
        trunk = lpips_trunk_file(net, trunk_path)
        if trunk is None:
            warn_once(lpips_missing_message(net))
            return
        import lpips

        with warnings.catch_warnings():  # lpips calls torchvision's deprecated `pretrained=` argument
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        trunk_state = torch.load(trunk, map_location="cpu", weights_only=True)
        # lpips keeps torchvision's `features[i]` layers as `slice<k>.<i>`: map the names across.
        mapped = {key: trunk_state[re.sub(r"^slice\d+\.", "features.", key)] for key in model.net.state_dict()}
        model.net.load_state_dict(mapped)
        self.model = model.eval().requires_grad_(False)

    @property
    def available(self) -> bool:
        return self.model is not None

    def _run(self, pred: torch.Tensor, target: torch.Tensor, spatial: bool, grad: bool = False) -> torch.Tensor:
        assert self.model is not None
        self.model.to(pred.device)
        self.model.spatial = spatial  # lpips reads this flag at call time: spatial maps or spatial means
        out = []
        for c in range(pred.shape[1]):  # LPIPS wants RGB: score each channel as grey, then average
            p = pred[:, c : c + 1].float().repeat(1, 3, 1, 1)
            t = target[:, c : c + 1].float().repeat(1, 3, 1, 1)
            with torch.set_grad_enabled(grad):
                out.append(self.model(p, t, normalize=True))
        return torch.stack(out).mean(0)

    def distance(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """LPIPS per image (N,), or None if unavailable."""
        return None if self.model is None else self._run(pred, target, spatial=False).flatten()

    def differentiable(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """LPIPS per image (N,) with gradients to ``pred``, for a perceptual loss."""
        assert self.model is not None, "LPIPS weights are missing"
        return self._run(pred, target, spatial=False, grad=True).flatten()

    def spatial_map(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """LPIPS map per image (N, 1, H, W), or None if unavailable."""
        return None if self.model is None else self._run(pred, target, spatial=True)


class LPIPSMean(MeanMetric):
    """Mean LPIPS over images, reduced across processes."""

    def __init__(self, scorer: LPIPSScorer, **kwargs):
        super().__init__(**kwargs)
        self._scorer = scorer

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        values = self._scorer.distance(preds, target)
        if values is not None:
            super().update(values)


class ImageMetrics(MetricCollection):
    """MSE, MAE, PSNR, SSIM and Pearson r (+ LPIPS when available), one collection per stage.

    PSNR and Pearson r are averaged over images; MSE and MAE over pixels; SSIM over images.
    """

    def __init__(self, lpips: LPIPSScorer | None = None, prefix: str | None = None):
        metrics: dict[str, Metric] = {
            "mse": MeanSquaredError(),
            "mae": MeanAbsoluteError(),
            "psnr": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),
            "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
            "pearson": PearsonPerImage(),
        }
        if lpips is not None and lpips.available:
            metrics["lpips"] = LPIPSMean(lpips)
        super().__init__(metrics, prefix=prefix, compute_groups=False)


HIGHER_IS_BETTER = {"mse": False, "mae": False, "psnr": True, "ssim": True, "pearson": True, "lpips": False,
                    "nuclei_f1": True, "nuclei_precision": True, "nuclei_recall": True, "hallucinated": False,
                    "missed": False}


def per_image_metrics(pred: torch.Tensor, target: torch.Tensor, lpips: LPIPSScorer | None = None) -> list[dict]:
    """One dict of metric values per image (for tables such as ``metrics.csv``)."""
    diff = pred.double() - target.double()
    mse = diff.pow(2).flatten(1).mean(1)
    values = {
        "mse": mse,
        "mae": diff.abs().flatten(1).mean(1),
        "psnr": 10 * torch.log10(1.0 / mse.clamp_min(1e-12)),
        "ssim": structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none"),
        "pearson": pearson_per_image(pred, target),
    }
    if lpips is not None and (distances := lpips.distance(pred, target)) is not None:
        values["lpips"] = distances
    return [{k: float(v[i]) for k, v in values.items()} for i in range(pred.shape[0])]


def image_maps(pred: torch.Tensor, target: torch.Tensor, lpips: LPIPSScorer | None = None) -> dict[str, torch.Tensor]:
    """Per-pixel maps (N, 1, H, W): absolute error, SSIM (local similarity, 1 = identical), LPIPS if available."""
    _, ssim_map = structural_similarity_index_measure(
        pred, target, data_range=1.0, reduction="none", return_full_image=True
    )
    maps = {"abs_error": (pred - target).abs().mean(1, keepdim=True), "ssim": ssim_map.mean(1, keepdim=True)}
    if lpips is not None and (lp := lpips.spatial_map(pred, target)) is not None:
        maps["lpips"] = lp
    return maps
