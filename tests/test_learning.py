"""The models learn: real optimisation steps through a Lightning Trainer (nothing of the step mocked) make the
pix2pix generator closer to its target and the segmenter's mask closer to the truth; and segmentation scores on
hand-made masks with known values."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from stainless.evaluation.segmentation import score_masks
from stainless.metrics.image import per_image_metrics
from stainless.models.pix2pix_module import Pix2PixModule
from stainless.models.segmentation_module import SegmentationModule


def _disk_pair(seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """A 'membrane' image (rings) and its 'nuclei' target (filled disks) of the same field."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    source, target = np.zeros((size, size), np.float32), np.zeros((size, size), np.float32)
    for _ in range(3):
        cy, cx, r = rng.uniform(8, size - 8), rng.uniform(8, size - 8), rng.uniform(4, 6)
        d = np.hypot(yy - cy, xx - cx)
        source[np.abs(d - r - 1.5) < 1.0] = 1.0
        target[d < r] = 1.0
    return torch.from_numpy(source)[None], torch.from_numpy(target)[None]


class _Pairs(Dataset):
    def __init__(self, pairs, mask: bool = False):
        self.pairs, self.mask = pairs, mask

    def __len__(self):
        return 64

    def __getitem__(self, i):
        source, target = self.pairs[i % len(self.pairs)]
        return {"source": source, "target": target.long()[0] if self.mask else target}


def _fit(module, dataset, steps: int) -> None:
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, DataLoader(dataset, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0)))


def test_pix2pix_training_steps_lower_l1_and_raise_ssim():
    torch.manual_seed(0)
    pairs = [_disk_pair(seed) for seed in range(4)]
    module = Pix2PixModule(
        in_channels=1, out_channels=1, generator={"name": "pix2pix_unet", "num_downs": 5, "ngf": 8, "norm": "batch",
                                                  "dropout": 0.0, "upsample": "resize"},
        discriminator={"ndf": 8, "n_layers": 2, "norm": "batch"},
        loss={"adversarial": "vanilla", "adversarial_weight": 1.0, "l1_weight": 100.0, "perceptual_weight": 0.0},
        optimizer_g={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 2e-3, "betas": [0.5, 0.999]},
        optimizer_d={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 2e-3, "betas": [0.5, 0.999]},
        metrics={"lpips": False}, eval_every_n_epochs=0)
    source = torch.stack([s for s, _ in pairs])
    target = torch.stack([t for _, t in pairs])

    def scores():
        module.eval()
        with torch.no_grad():
            rows = per_image_metrics(module(source).clamp(0, 1), target)
        return np.mean([r["mae"] for r in rows]), np.mean([r["ssim"] for r in rows])

    l1_before, ssim_before = scores()
    _fit(module, _Pairs(pairs), steps=60)
    l1_after, ssim_after = scores()
    assert l1_after < 0.5 * l1_before, (l1_before, l1_after)
    assert ssim_after > ssim_before + 0.2, (ssim_before, ssim_after)


def test_segmenter_training_steps_raise_iou():
    torch.manual_seed(0)
    pairs = [(t * 0.7 + 0.15 * torch.rand_like(t), t) for _, t in (_disk_pair(seed) for seed in range(4))]
    module = SegmentationModule(
        arch="unet", backbone={"name": "resnet18", "encoder_name": "resnet18", "encoder_weights": None,
                               "encoder_depth": 3, "decoder_channels": [32, 16, 8]},
        in_channels=1, classes=1, loss={"bce_weight": 1.0, "jaccard_weight": 1.0},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 3e-3})
    module.size_multiple = 8
    source = torch.stack([s for s, _ in pairs])
    truth = torch.stack([t for _, t in pairs])[:, 0] > 0

    def iou():
        module.eval()
        with torch.no_grad():
            pred = module.probabilities(source)[:, 0] > 0.5
        return float((pred & truth).sum() / (pred | truth).sum())

    before = iou()
    _fit(module, _Pairs(pairs, mask=True), steps=40)
    after = iou()
    assert after > 0.8 and after > before + 0.3, (before, after)


def test_segmentation_scores_of_hand_made_masks():
    truth = np.zeros((10, 10), bool)
    truth[0:4, 0:4] = True  # 16 px, cell 1
    truth[6:10, 6:10] = True  # 16 px, cell 2
    pred = np.zeros((10, 10), bool)
    pred[0:4, 0:5] = True  # cell 1 found with 4 extra pixels (IoU 16/20 = 0.8)
    pred[6:8, 0:2] = True  # a spurious 4-px object; cell 2 missed
    true_instances = truth.astype(int)
    true_instances[6:10, 6:10] = 2
    pred_instances = np.zeros((10, 10), int)
    pred_instances[0:4, 0:5] = 1
    pred_instances[6:8, 0:2] = 2
    row, _ = score_masks(pred, pred_instances, truth, true_instances)
    tp, fp, fn = 16, 8, 16
    assert row["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert row["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert row["precision"] == pytest.approx(tp / (tp + fp)) and row["recall"] == pytest.approx(tp / (tp + fn))
    assert (row["n_true"], row["n_pred"], row["missed"], row["spurious"]) == (2, 2, 1, 1)
    assert row["object_f1"] == pytest.approx(0.5)  # one of two found, one of two predicted real


class _Threshold(torch.nn.Module):
    """Stands in for the network (not what is tested here): bright pixels are cell."""

    size_multiple = 1

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(40.0))

    def probabilities(self, x):
        return torch.sigmoid(self.scale * (x[:, :1] - 0.5))


def test_video_areas_and_time_constant_match_the_generator_truth(tmp_path):
    """Disks shrinking as A(t) = A0 (f + (1 - f) exp(-t / tau)), one frame every 2 s: the measured areas follow the
    truth frame by frame and the fitted tau (in seconds) is the true one; a wrong time axis (frames divided by the
    interval, say) is off by a factor of 4 and fails."""
    import tifffile

    from stainless.video import analyse_video, shrink_model

    interval, tau, fraction, n_frames, size = 2.0, 12.0, 0.6, 24, 96
    centres, radii = [(25, 25), (25, 70), (70, 48)], [14.0, 12.0, 16.0]
    yy, xx = np.mgrid[:size, :size]
    frames, truth = [], []
    for frame in range(n_frames):
        t = frame * interval
        image = np.zeros((size, size), np.uint8)
        for cell, ((cy, cx), r0) in enumerate(zip(centres, radii)):
            r = r0 * np.sqrt(shrink_model(t, 1.0, tau, fraction))
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            image[inside] = 200
            truth.append({"cell": cell, "frame": frame, "time_s": t, "area": int(inside.sum())})
        frames.append(image)
    tifffile.imwrite(tmp_path / "video.tif", np.stack(frames), metadata={"axes": "TYX"})
    rows, fits = analyse_video(_Threshold(), tmp_path / "video.tif", "A", interval, tmp_path,
                               {"mode": "range", "vmin": 0, "vmax": 255}, min_size=20, min_distance=10,
                               overlay_video=False)
    assert len(fits) == 3 and len(rows) == 3 * n_frames
    for row in rows:  # times in seconds and areas in pixels, cell by cell (matched by position)
        cell = int(np.argmin([np.hypot(row["y"] - cy, row["x"] - cx) for cy, cx in centres]))
        expected = next(t for t in truth if t["cell"] == cell and t["frame"] == row["frame"])
        assert row["time_s"] == expected["time_s"]
        assert row["area"] == pytest.approx(expected["area"], rel=0.03)
    for fit in fits:
        assert fit["tau"] == pytest.approx(tau, rel=0.1) and fit["final_fraction"] == pytest.approx(fraction, abs=0.05)
