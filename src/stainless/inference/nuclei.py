"""Detecting nuclei in an image: a classical threshold and watershed, or a trained segmentation checkpoint run by
tiles. Both the target and the prediction of a virtual-labeling model go through the same detector before their
nuclei are matched (:mod:`stainless.metrics.nuclei`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage import filters

from stainless.inference.tiling import predict_tiled
from stainless.metrics.objects import instances_from_mask

THRESHOLDS = {"otsu": filters.threshold_otsu, "li": filters.threshold_li, "triangle": filters.threshold_triangle}


@dataclass
class NucleusDetector:
    """Nuclei instance labels from a nuclei image (H, W) or (C, H, W) in [0, 1].

    ``method="classical"``: Gaussian smoothing, an automatic (or fixed) threshold, and a distance-transform
    watershed that splits touching nuclei (scikit-image). ``method="checkpoint"``: the foreground of a trained
    stainless segmentation checkpoint, split the same way.

    Args:
        method: ``classical`` or ``checkpoint``.
        sigma: Gaussian smoothing (pixels) before thresholding.
        threshold: ``otsu``, ``li``, ``triangle`` (computed per image), or a fixed intensity in [0, 1].
        min_contrast: an image whose intensity range (0.5th to 99.5th percentile) is below this holds no nuclei;
            an automatic threshold would otherwise split flat noise into "nuclei".
        min_size: smallest nucleus kept (pixels).
        min_distance: closest centres of two touching nuclei (pixels, about a nucleus radius).
        checkpoint: path of the segmentation checkpoint for ``method="checkpoint"``.
    """

    method: str = "classical"
    sigma: float = 1.5
    threshold: str | float = "otsu"
    min_contrast: float = 0.1
    min_size: int = 20
    min_distance: int = 7
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        if self.method not in ("classical", "checkpoint"):
            raise ValueError(f"nuclei.detector.method: unknown detector {self.method!r}; use classical or checkpoint")
        if isinstance(self.threshold, str) and self.threshold not in THRESHOLDS:
            raise ValueError(f"nuclei.detector.threshold: {self.threshold!r}; use {', '.join(THRESHOLDS)} or a number")
        self._segmenter = None
        if self.method == "checkpoint":
            if not self.checkpoint:
                raise ValueError("nuclei.detector.method=checkpoint needs nuclei.detector.checkpoint=PATH")
            from stainless.models.checkpoint import module_from_checkpoint
            from stainless.models.segmentation_module import SegmentationModule

            module, _ = module_from_checkpoint(self.checkpoint)
            if not isinstance(module, SegmentationModule):
                raise ValueError(f"{self.checkpoint}: not a segmentation checkpoint ({type(module).__name__})")
            self._segmenter = module.eval()

    def to(self, device: torch.device | str) -> NucleusDetector:
        """Run the checkpoint detector's network on ``device`` (the classical detector runs on the CPU)."""
        if self._segmenter is not None:
            self._segmenter.to(device)
        return self

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> NucleusDetector:
        return cls(**dict(config or {}))

    def foreground(self, image: np.ndarray) -> np.ndarray:
        """Boolean nuclei mask of one image."""
        image = np.asarray(image, np.float32)
        if self._segmenter is not None:
            return self._segment(image)
        grey = image.mean(0) if image.ndim == 3 else image
        low, high = np.percentile(grey, (0.5, 99.5))
        if high - low < self.min_contrast:
            return np.zeros(grey.shape, bool)
        smooth = ndi.gaussian_filter(grey, self.sigma) if self.sigma else grey
        level = THRESHOLDS[self.threshold](smooth) if isinstance(self.threshold, str) else float(self.threshold)
        return smooth > level

    def _segment(self, image: np.ndarray) -> np.ndarray:
        module = self._segmenter
        x = torch.from_numpy(image if image.ndim == 3 else image[None])
        channels = module.hparams.in_channels
        if x.shape[0] != channels:
            x = x.mean(0, keepdim=True).expand(channels, -1, -1)
        device = next(module.parameters()).device
        foreground = lambda b: module.probabilities(b)[:, -1:]
        probs = predict_tiled(foreground, x.to(device), max(64, min(512, max(x.shape[-2:]))), 0.25, 4, module.size_multiple)
        return probs[0].cpu().numpy() > 0.5

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Instance labels (H, W) int32, 0 = background."""
        return instances_from_mask(self.foreground(image), self.min_size, self.min_distance)
