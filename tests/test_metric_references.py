"""Metrics against independent references: scikit-image, numpy and closed forms, per image and aggregated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from stainless.metrics.image import ImageMetrics, per_image_metrics
from stainless.metrics.objects import match_objects


def _pair(seed: int, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.random((size, size)).astype(np.float32)
    pred = np.clip(target * 0.7 + 0.2 * rng.random((size, size)), 0, 1).astype(np.float32)
    return pred, target


def _torch(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(a)[None, None] for a in arrays]


@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_equals_scikit_image_with_the_same_window_and_range(seed):
    pred, target = _pair(seed)
    reference = structural_similarity(target, pred, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, win_size=11)
    p, t = _torch(pred, target)
    # torchmetrics keeps the border (valid region of an 11-px window), scikit-image crops it the same way
    assert per_image_metrics(p, t)[0]["ssim"] == pytest.approx(reference, abs=2e-3)


def test_psnr_mse_mae_of_a_constant_shift_have_closed_forms():
    target = np.random.default_rng(0).random((32, 32)).astype(np.float32) * 0.8
    pred = target + 0.1
    row = per_image_metrics(*_torch(pred, target))[0]
    assert row["mse"] == pytest.approx(0.01, rel=1e-4) and row["mae"] == pytest.approx(0.1, rel=1e-4)
    assert row["psnr"] == pytest.approx(20.0, abs=1e-3)  # 10 log10(1 / 0.01)
    assert row["pearson"] == pytest.approx(1.0, abs=1e-6)  # a shift keeps the correlation
    assert row["ssim"] < 0.99  # but not the structure term's luminance part


def test_pearson_matches_numpy_and_aggregates_are_means_over_images():
    pairs = [_pair(s) for s in range(3)]
    rows = [per_image_metrics(*_torch(p, t))[0] for p, t in pairs]
    for (p, t), row in zip(pairs, rows):
        assert row["pearson"] == pytest.approx(np.corrcoef(p.ravel(), t.ravel())[0, 1], abs=1e-5)
    collection = ImageMetrics()
    for p, t in pairs:
        collection.update(*_torch(p, t))
    values = collection.compute()
    for name in ("ssim", "psnr", "pearson"):  # per-image values averaged over images
        assert float(values[name]) == pytest.approx(np.mean([r[name] for r in rows]), abs=1e-4), name
    # MSE over all pixels (equal-sized images: the mean of the per-image MSE)
    assert float(values["mse"]) == pytest.approx(np.mean([r["mse"] for r in rows]), rel=1e-5)


def test_object_matching_on_hand_made_labels():
    true = np.zeros((20, 40), np.int32)
    true[2:8, 2:8], true[2:8, 12:18], true[12:18, 30:36] = 1, 2, 3  # three 6x6 cells
    pred = np.zeros_like(true)
    pred[2:8, 3:9] = 5    # cell 1 shifted by a column: IoU 30/42 = 0.714
    pred[12:18, 30:36] = 7  # cell 3 exact
    pred[14:18, 2:6] = 9    # spurious
    result = match_objects(true, pred)
    at50, at75 = result["by_threshold"][0.5], result["by_threshold"][0.75]
    assert (at50["tp"], at50["fp"], at50["fn"]) == (2, 1, 1)
    assert at50["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert (at75["tp"], at75["fp"], at75["fn"]) == (1, 2, 2)  # the shifted cell no longer counts
    assert sorted(result["missed"]) == [2] and sorted(result["spurious"]) == [9]
