"""Uncertainty of a prediction without ground truth, from samples under test-time augmentation or Monte-Carlo
dropout.

A nucleus the model is sure of appears the same whichever way the input is flipped or rotated (or whichever
dropout mask is drawn); an invented one tends to come and go. Two maps say so: :func:`object_disagreement` (the
default) asks of each predicted nucleus whether the same object is detected in every sample; :func:`uncertainty_map`
is the per-pixel spread relative to brightness, which :func:`stainless.metrics.nuclei.nuclei_table` turns into a
risk per nucleus.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from stainless.inference.tiling import predict_tiled
from stainless.metrics.objects import iou_matrix

METHODS = ("none", "tta", "mc_dropout")
# What the uncertainty map shows: whether each nucleus comes back in every sample (objects), or the pixel spread
# relative to brightness (relative).
UNCERTAINTY_MAPS = ("objects", "relative")


def dihedral(x: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """The k-th of the 8 symmetries of the square (k = 0..7: 4 rotations, each with or without a flip)."""
    rotations, flip = k % 4, k >= 4
    if not inverse:
        x = x.flip(-1) if flip else x
        return torch.rot90(x, rotations, (-2, -1))
    x = torch.rot90(x, -rotations, (-2, -1))
    return x.flip(-1) if flip else x


def symmetry_averaged(predict: Callable[[torch.Tensor], torch.Tensor], n: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``predict`` on square batches (N, C, t, t) averaged over the first ``n`` of the 8 symmetries of the square,
    each undone on its output (test-time augmentation, as nnU-Net mirrors by default); ``n = 1`` is ``predict``.
    The ``n`` views of a batch go through the network in one call."""
    if not 1 <= n <= 8:
        raise ValueError(f"test-time augmentation: {n} transforms; there are 1 to 8 (the symmetries of the square)")
    if n == 1:
        return predict

    def averaged(batch: torch.Tensor) -> torch.Tensor:
        views = predict(torch.cat([dihedral(batch, k) for k in range(n)]))
        return torch.stack([dihedral(v, k, inverse=True) for k, v in enumerate(views.chunk(n))]).mean(0)

    return averaged


def _dropout_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


def sample_predictions(
    predict: Callable[[torch.Tensor], torch.Tensor],
    module: nn.Module,
    image: torch.Tensor,
    method: str,
    n_samples: int,
    tile_size: int,
    overlap: float = 0.25,
    batch_size: int = 4,
    multiple: int = 1,
    seed: int = 0,
) -> torch.Tensor:
    """Predictions of one (C, H, W) image under ``method``: (n, C_out, H, W).

    Args:
        predict: the model's inference function on batches (N, C, t, t).
        module: the network behind ``predict`` (its dropout layers are switched on for ``mc_dropout``).
        method: ``tta`` (the first ``n_samples`` of the 8 flips/rotations, each undone on the output) or
            ``mc_dropout`` (``n_samples`` passes with dropout active, seeded).
    """
    if method == "tta":
        if not 2 <= n_samples <= 8:
            raise ValueError(f"uncertainty.n_samples={n_samples}: test-time augmentation has 2 to 8 transforms")
        return torch.stack([
            predict_tiled(lambda b, k=k: dihedral(predict(dihedral(b, k)), k, inverse=True), image, tile_size, overlap,
                          batch_size, multiple)
            for k in range(n_samples)
        ])
    if method == "mc_dropout":
        layers = _dropout_layers(module)
        if not layers:
            raise ValueError(
                "uncertainty.method=mc_dropout: this model has no dropout layers; use uncertainty.method=tta"
            )
        if n_samples < 2:
            raise ValueError(f"uncertainty.n_samples={n_samples}: Monte-Carlo dropout needs at least 2 samples")
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            for layer in layers:
                layer.train()
            return torch.stack([predict_tiled(predict, image, tile_size, overlap, batch_size, multiple)
                                for _ in range(n_samples)])
        finally:
            for layer in layers:
                layer.eval()
            torch.random.set_rng_state(generator_state)
    raise ValueError(f"uncertainty.method: unknown method {method!r}; use {', '.join(METHODS)}")


# Intensity (in [0, 1]) added to the mean before dividing: background pixels, predicted near 0, would otherwise turn
# a tiny flicker into a huge relative spread.
RELATIVE_FLOOR = 0.1


def spread_map(samples: torch.Tensor) -> torch.Tensor:
    """Per-pixel standard deviation over samples (n, C, H, W), averaged over channels: (H, W)."""
    return samples.std(0, unbiased=False).mean(0)


def uncertainty_map(samples: torch.Tensor, floor: float = RELATIVE_FLOOR) -> torch.Tensor:
    """Per-pixel spread relative to brightness: std / (mean + ``floor``) over samples (n, C, H, W), averaged over
    channels: (H, W). Higher means more likely wrong.

    The plain standard deviation grows with intensity, so a bright nucleus the model draws the same way under
    every transform still had more of it than a dim nucleus that comes and goes: the plain map ranked invented
    nuclei *below* real ones (ROC AUC 0.15 on a real field). Relative to the mean, a stable bright nucleus scores
    low and a flickering one high, as the per-nucleus risk does.
    """
    return (samples.std(0, unbiased=False) / (samples.mean(0).clamp(min=0) + floor)).mean(0)


def object_disagreement(samples: torch.Tensor, labels: np.ndarray,
                        detect: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, dict[int, float]]:
    """How far the nuclei detected in each sample disagree with the nuclei of the prediction: (H, W) map, and the
    disagreement of each predicted nucleus by id. Higher means more likely wrong.

    Each sample (n, C, H, W) goes through ``detect`` (the evaluation's nucleus detector). A predicted nucleus
    (``labels``) scores 1 minus its mean, over the samples, of its best IoU with a nucleus detected in that sample:
    0 for one found the same way in every sample, near 1 for one that most samples lack or draw elsewhere. Its
    pixels carry that score; a background pixel carries the share of samples that detect a nucleus there.

    Pixel spread alone could not tell invented nuclei from found ones on a real field (ROC AUC 0.53, about
    chance): an invented nucleus can be drawn with the same brightness under every flip, yet its outline moves;
    whether the same object comes back is what a biologist wants to know of it.
    """
    labels = np.asarray(labels)
    ids = np.unique(labels[labels > 0])
    best = np.zeros((len(samples), len(ids)))
    detected_share = np.zeros(labels.shape, np.float64)
    for k, sample in enumerate(samples):
        found = detect(sample.numpy())
        detected_share += found > 0
        if len(ids):
            iou, _, _ = iou_matrix(labels, found)
            if iou.shape[1]:
                best[k] = iou.max(1)
    disagreement = 1.0 - best.mean(0)
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, np.float64)
    lut[ids] = disagreement
    picture = np.where(labels > 0, lut[labels], detected_share / max(len(samples), 1))
    return picture.astype(np.float32), {int(i): float(d) for i, d in zip(ids, disagreement)}
