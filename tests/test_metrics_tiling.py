import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from stainless.inference.tiling import predict_tiled
from stainless.metrics.image import ImageMetrics, LPIPSScorer, image_maps, pearson_per_image, per_image_metrics


def test_metrics_on_known_cases():
    target = torch.rand(3, 1, 32, 32)
    perfect = per_image_metrics(target, target)
    assert all(r["mse"] == 0 and r["ssim"] > 0.999 and r["pearson"] > 0.999 for r in perfect)
    shifted = (target + 0.1).clamp(0, 1)
    rows = per_image_metrics(shifted, target)
    assert all(0 < r["mse"] < 0.011 and r["psnr"] > 19.5 for r in rows)
    assert pearson_per_image(1 - target, target).max() < -0.999


def test_metric_collection_matches_per_image_values():
    pred, target = torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32)
    collection = ImageMetrics(prefix="val/")
    collection.update(pred[:2], target[:2])
    collection.update(pred[2:], target[2:])
    values = collection.compute()
    rows = per_image_metrics(pred, target)
    assert np.isclose(float(values["val/psnr"]), np.mean([r["psnr"] for r in rows]), atol=1e-4)
    assert np.isclose(float(values["val/pearson"]), np.mean([r["pearson"] for r in rows]), atol=1e-5)
    assert np.isclose(float(values["val/mse"]), np.mean([r["mse"] for r in rows]), atol=1e-6)
    assert "val/lpips" not in values


def test_lpips_absent_is_skipped_with_one_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr("stainless.utils.pretrained._WARNED", set())
    with pytest.warns(UserWarning, match="LPIPS is skipped.*alexnet.*metrics.lpips_trunk") as record:
        scorer = LPIPSScorer("alex")
        LPIPSScorer("alex")  # second time: no second warning
    assert sum("LPIPS is skipped" in str(w.message) for w in record) <= 1
    assert not scorer.available
    pred = torch.rand(1, 1, 32, 32)
    assert scorer.distance(pred, pred) is None
    rows = per_image_metrics(pred, pred, scorer)
    assert rows and all("lpips" not in row and "ssim" in row for row in rows)
    assert "lpips" not in image_maps(pred, pred, scorer)


def test_lpips_present_uses_the_trunk_file(tmp_path):
    trunk = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet().state_dict(), trunk)  # any AlexNet weights in torchvision's layout
    scorer = LPIPSScorer("alex", trunk_path=str(trunk))
    assert scorer.available
    first_conv = scorer.model.net.slice1[0].weight
    assert torch.equal(first_conv, torch.load(trunk, weights_only=True)["features.0.weight"])
    pred, other = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64)
    same, different = scorer.distance(pred, pred), scorer.distance(pred, other)
    assert torch.allclose(same, torch.zeros(2), atol=1e-6) and (different > 0).all()
    spatial = scorer.spatial_map(pred, other)
    assert spatial.shape == (2, 1, 64, 64)
    assert "lpips" in ImageMetrics(scorer).keys()
    # images in [0, 1] are handed to LPIPS in its [-1, 1], each channel as grey RGB
    scorer.model.spatial = False  # the mean per image, as distance() asks
    with torch.no_grad():
        expected = scorer.model(2 * pred.repeat(1, 3, 1, 1) - 1, 2 * other.repeat(1, 3, 1, 1) - 1).flatten()
    assert torch.allclose(different, expected, atol=1e-6)
    two = torch.cat([pred, pred.flip(-1)], 1), torch.cat([other, other.flip(-2)], 1)  # two channels: their mean
    per_channel = [scorer.distance(two[0][:, c : c + 1], two[1][:, c : c + 1]) for c in (0, 1)]
    assert torch.allclose(scorer.distance(*two), (per_channel[0] + per_channel[1]) / 2, atol=1e-6)
    assert [row["lpips"] for row in per_image_metrics(pred, other, scorer)] == pytest.approx(different.tolist())
    assert torch.equal(image_maps(pred, other, scorer)["lpips"], spatial)
    # as a loss: gradients reach the prediction, never the frozen LPIPS network
    guess = pred.clone().requires_grad_(True)
    scorer.differentiable(guess, other).sum().backward()
    assert guess.grad is not None and guess.grad.abs().sum() > 0
    assert not any(p.requires_grad or p.grad is not None for p in scorer.model.parameters())


class Pointwise(nn.Module):
    def forward(self, x):
        return torch.sigmoid(3 * x - 1) * 0.5


def test_tiled_prediction_equals_whole_image_for_a_pointwise_net():
    image = torch.rand(2, 150, 97)
    whole = Pointwise()(image[None])[0]
    tiled = predict_tiled(Pointwise(), image, tile_size=32, overlap=0.25, batch_size=3)
    assert tiled.shape == whole.shape == (2, 150, 97)
    assert torch.allclose(tiled, whole, atol=1e-6)


def test_tiled_prediction_agrees_inside_for_a_local_conv_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1)).eval()
    image = torch.rand(1, 200, 200)
    whole = net(image[None])[0]
    tiled = predict_tiled(net, image, tile_size=64, overlap=0.25)
    # receptive field 5 px: tiles differ from the whole image only within 2 px of a tile border, and the
    # blending window gives those pixels little weight
    assert (tiled - whole).abs().mean() < 2e-3
    assert torch.allclose(tiled[:, 2:-2, 2:-2][:, :40, :40], whole[:, 2:-2, 2:-2][:, :40, :40], atol=1e-5)


def test_tiled_prediction_handles_images_smaller_than_a_tile():
    image = torch.rand(1, 20, 30)
    out = predict_tiled(Pointwise(), image, tile_size=64, multiple=32)
    assert out.shape == (1, 20, 30)
    assert torch.allclose(out, Pointwise()(image[None])[0], atol=1e-6)
