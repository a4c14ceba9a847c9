"""Hallucinated and missed nuclei: matching, detection, map separation, uncertainty, and the evaluation output."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage as ndi
from torch import nn

from stainless.data.synthetic import synthesize_tissue
from stainless.evaluate import evaluate
from stainless.inference.nuclei import NucleusDetector
from stainless.inference.uncertainty import dihedral, sample_predictions, symmetry_averaged, uncertainty_map
from stainless.io import normalize
from stainless.metrics.nuclei import MapSeparation, error_masks, nuclei_table, roc_auc, score_nuclei
from stainless.train import train


def _squares(size, boxes):
    labels = np.zeros((size, size), np.int32)
    for i, (y, x, s) in enumerate(boxes, start=1):
        labels[y : y + s, x : x + s] = i
    return labels


def test_matching_hand_made_labels():
    true = _squares(64, [(2, 2, 10), (2, 30, 10), (40, 40, 10)])
    # 1: exact; 2: shifted by one pixel (IoU 90/110 = 0.82); 3: missed; plus a far shifted one and an extra
    pred = _squares(64, [(2, 2, 10), (3, 30, 10), (40, 47, 10), (50, 5, 8)])
    score = score_nuclei(true, pred)
    assert (score["tp"], score["hallucinated"], score["missed"]) == (2, 2, 1)
    assert score["count_error"] == 1
    assert score["f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert score["missed_ids"] == [3] and score["hallucinated_ids"] == [3, 4]
    assert score["by_threshold"][0.8]["tp"] == 2 and score["by_threshold"][0.85]["tp"] == 1
    wrong, right = error_masks(true, pred, score)
    assert wrong[40:50, 40:57].all() and wrong[50:58, 5:13].all() and not wrong[2:12, 2:12].any()
    assert right[2:12, 2:12].all() and not right[40:50, 40:57].any()


def _tissue(index, size=128):
    field = synthesize_tissue(seed=3, index=index, size=size)
    return normalize(field["nuclei"][None].astype(np.float32))[0], field["labels"].astype(np.int32)


@pytest.mark.parametrize("index", [0, 1])
def test_classical_detector_recovers_the_generators_nuclei(index):
    image, labels = _tissue(index)
    score = score_nuclei(labels, NucleusDetector()(image))
    assert score["n_true"] >= 10
    assert score["f1"] >= 0.9, score["by_threshold"][0.5]
    # a flat, noisy image holds no nuclei (no threshold splitting noise into objects)
    noise = np.random.default_rng(0).normal(0.1, 0.01, image.shape).astype(np.float32)
    assert NucleusDetector()(noise).max() == 0


def test_injected_fake_nuclei_are_hallucinated_and_removed_ones_missed():
    image, labels = _tissue(2)
    detector = NucleusDetector()
    clean = score_nuclei(labels, detector(image))
    fake = image.copy()
    background = float(np.median(image[labels == 0]))
    removed = int(labels[64, 64]) or int(np.unique(labels[labels > 0])[len(np.unique(labels)) // 2])
    fake[ndi.binary_dilation(labels == removed, iterations=2)] = background
    # two discs where the tissue has no nucleus: the points farthest from every nucleus (away from the border)
    far = ndi.distance_transform_edt(labels == 0)
    far[:12], far[-12:], far[:, :12], far[:, -12:] = 0, 0, 0, 0
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    injected = []
    for _ in range(2):
        y, x = np.unravel_index(np.argmax(far), far.shape)
        assert far[y, x] >= 8, "no room for a fake nucleus"
        disc = (yy - y) ** 2 + (xx - x) ** 2 <= 4.5**2
        fake[disc] = 0.9
        injected.append((y, x))
        far[(yy - y) ** 2 + (xx - x) ** 2 <= 20**2] = 0
    found = detector(fake)
    score = score_nuclei(labels, found)
    assert set(score["missed_ids"]) - set(clean["missed_ids"]) == {removed}

    def centres(found_labels, ids):
        return [np.argwhere(found_labels == i).mean(0) for i in ids]

    before = centres(detector(image), clean["hallucinated_ids"])
    new = [c for c in centres(found, score["hallucinated_ids"]) if all(np.hypot(*(c - b)) > 3 for b in before)]
    assert len(new) == 2
    for y, x in injected:
        assert min(np.hypot(y - cy, x - cx) for cy, cx in new) < 2


def test_map_separation_auc_on_a_constructed_case():
    true = _squares(32, [(2, 2, 8), (20, 20, 8)])
    pred = _squares(32, [(2, 2, 8), (20, 2, 8)])  # true 2 missed, pred 2 hallucinated
    score = score_nuclei(true, pred)
    wrong, right = error_masks(true, pred, score)
    assert wrong.sum() == 128 and right.sum() == 64
    perfect = wrong.astype(np.float32)
    half = np.zeros((32, 32), np.float32)
    half[20:28, 20:28] = 1.0  # high on the missed nucleus only: half the wrong pixels
    separation = MapSeparation()
    separation.update({"perfect": perfect, "inverted": 1 - perfect, "half": half}, wrong, right)
    aucs = {name: v["roc_auc"] for name, v in separation.compute().items()}
    # half the positives rank above every negative, the other half tie with all of them: 0.5 + 0.5 * 0.5
    assert aucs == pytest.approx({"perfect": 1.0, "inverted": 0.0, "half": 0.75})
    assert roc_auc(np.ones(3), np.ones(3, bool)) is None


class _Pointwise(nn.Module):
    """Commutes with every flip and rotation: test-time augmentation cannot change its output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        nn.init.constant_(self.conv.weight, 4.0)
        nn.init.constant_(self.conv.bias, -2.0)

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


class _Ramp(_Pointwise):
    """Adds a left-to-right ramp: flipping the input changes the output."""

    def forward(self, x):
        return super().forward(x) * 0.5 + torch.linspace(0, 0.5, x.shape[-1])


class _Dropout(_Pointwise):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return torch.sigmoid(self.conv(self.drop(x)))


def test_dihedral_inverse_and_uncertainty_maps():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 8, 8)
    for k in range(8):
        assert torch.equal(dihedral(dihedral(x, k), k, inverse=True), x)
    assert len({dihedral(x, k).flatten().tolist().__str__() for k in range(8)}) == 8
    image = torch.rand(1, 40, 40)
    for model, expect_zero in ((_Pointwise().eval(), True), (_Ramp().eval(), False)):
        draws = sample_predictions(model, model, image, "tta", 8, tile_size=32, multiple=1)
        assert draws.shape == (8, 1, 40, 40)
        spread = uncertainty_map(draws)
        assert (spread.abs().max() < 1e-6) if expect_zero else (spread.mean() > 0.01)
    dropout = _Dropout().eval()
    spread = uncertainty_map(sample_predictions(dropout, dropout, image, "mc_dropout", 4, tile_size=32))
    assert spread.mean() > 0.05 and not dropout.drop.training  # dropout switched back off afterwards
    again = uncertainty_map(sample_predictions(dropout, dropout, image, "mc_dropout", 4, tile_size=32))
    assert torch.equal(spread, again)  # seeded
    with pytest.raises(ValueError, match="no dropout layers"):
        sample_predictions(_Pointwise(), _Pointwise(), image, "mc_dropout", 4, tile_size=32)


def test_symmetry_averaged_prediction_turns_with_the_image():
    torch.manual_seed(0)
    net = nn.Conv2d(1, 2, 5, padding=2)  # an asymmetric kernel: the bare network does not turn with the image
    x = torch.rand(3, 1, 16, 16)
    turned = lambda t, k: dihedral(t, k)  # noqa: E731
    with torch.no_grad():
        assert not torch.allclose(net(turned(x, 1)), turned(net(x), 1), atol=1e-3)
        averaged = symmetry_averaged(net, 8)
        for k in range(8):  # over all 8 views each prediction is undone: the average turns with the image
            assert torch.allclose(averaged(turned(x, k)), turned(averaged(x), k), atol=1e-5), k
        two = torch.rot90(net(torch.rot90(x, 1, (-2, -1))), -1, (-2, -1))  # the second view, a quarter turn
        assert torch.allclose(symmetry_averaged(net, 2)(x), (net(x) + two) / 2, atol=1e-6)
    assert symmetry_averaged(net, 1) is net
    with pytest.raises(ValueError, match="9 transforms"):
        symmetry_averaged(net, 9)


def test_risk_is_relative_spread_per_nucleus():
    labels = _squares(32, [(2, 2, 8), (20, 20, 8)])
    image = np.full((32, 32), 0.5, np.float32)
    spread = np.zeros((32, 32), np.float32)
    spread[20:28, 20:28] = 0.25
    rows = {r["nucleus"]: r for r in nuclei_table(labels, image, spread)}
    assert rows[1]["risk"] == 0 and rows[2]["risk"] == pytest.approx(0.5)
    assert rows[2]["area"] == 64 and rows[2]["y"] == pytest.approx(23.5)


def test_training_logs_nuclei_scores_and_evaluation_reports_them(cfg_train, cfg_eval):
    cfg = cfg_train("trainer.max_epochs=1", "test=false")
    metrics = train(cfg)
    assert 0.0 <= metrics["val_field/nuclei_f1"] <= 1.0
    assert metrics["val_field/hallucinated"] >= 0 and metrics["val_field/missed"] >= 0
    assert "val_field/nuclei_f1_best" in metrics
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    ecfg = cfg_eval(f"ckpt_path={ckpt}", "uncertainty.n_samples=2")
    summary = evaluate(ecfg)
    out = Path(ecfg.paths.output_dir)
    nuclei = summary["nuclei"]
    assert nuclei["truth"] == "label images"
    model = nuclei["pooled_over_images"]["model"]
    rows = [r for r in csv.DictReader(open(out / "metrics.csv")) if r["method"] == "model"]
    assert model["tp"] == sum(int(r["nuclei_tp"]) for r in rows)
    assert model["hallucinated"] == sum(int(r["hallucinated"]) for r in rows)
    # the constant baseline draws no nuclei, so it misses every true one
    assert nuclei["pooled_over_images"]["baseline_mean"]["missed"] == sum(int(r["n_true"]) for r in rows)
    assert set(nuclei["map_separation"]) >= {"abs_error", "1-ssim", "uncertainty"}
    assert "roc_auc" in nuclei["risk_separation"]
    table = list(csv.DictReader(open(out / "nuclei.csv")))
    assert {r["status"] for r in table} <= {"found", "hallucinated", "missed"}
    assert sum(r["status"] == "hallucinated" for r in table) == model["hallucinated"]
    assert list((out / "maps").glob("*_nuclei.png")) and list((out / "maps").glob("*_uncertainty.tif"))
    # the uncertainty map (uncertainty.map=objects): one value over each predicted nucleus, its risk in nuclei.csv
    assert "relative_spread" in nuclei["map_separation"]
    name = rows[0]["image"]
    picture = tifffile.imread(out / "maps" / f"{name}_uncertainty.tif")
    predicted = tifffile.imread(out / "nuclei" / f"{name}_predicted.tif")
    risks = {int(r["nucleus"]): float(r["risk"]) for r in table if r["image"] == name and r["status"] != "missed"}
    assert set(risks) == set(np.unique(predicted[predicted > 0]).tolist()) and risks
    for nucleus, risk in risks.items():
        assert np.allclose(picture[predicted == nucleus], risk, atol=1e-6) and 0 <= risk <= 1
    assert "Hallucinated and missed nuclei" in (out / "report.html").read_text()
    assert json.loads((out / "summary.json").read_text())["nuclei"]["detector"]["method"] == "classical"

    # new images without targets: nuclei and their risk are still listed, with status unknown
    inputs = Path(cfg.paths.data_dir) / "synthetic_nuclei" / "membrane"
    ecfg = cfg_eval(f"ckpt_path={ckpt}", f"input={inputs}", "uncertainty.n_samples=2", "uncertainty.map=relative",
                    "max_report_images=1", run="new")
    evaluate(ecfg)
    table = list(csv.DictReader(open(Path(ecfg.paths.output_dir) / "nuclei.csv")))
    assert {r["status"] for r in table} == {"unknown"} and all(r["risk"] for r in table)
    # the relative map's risk is its spread over the nucleus's brightness, not one value per nucleus
    assert all(float(r["risk"]) == pytest.approx(float(r["uncertainty"]) / max(float(r["mean_intensity"]), 1e-3),
                                               rel=1e-5) for r in table)
    bad = cfg_eval(f"ckpt_path={ckpt}", "uncertainty.map=pixels", run="bad")
    with pytest.raises(ValueError, match="uncertainty.map='pixels': use objects or relative"):
        evaluate(bad)
    assert not (Path(bad.paths.output_dir) / "config_resolved.yaml").exists()  # refused before anything is written

    # a checkpoint detector must be a segmentation checkpoint
    with pytest.raises(ValueError, match="not a segmentation checkpoint"):
        NucleusDetector(method="checkpoint", checkpoint=str(ckpt))


def test_checkpoint_detector(cfg_train):
    seg = cfg_train("experiment=rbc_segmentation", "backbone.encoder_weights=null", "data.synthetic.n_frames=6",
                    "data.synthetic.n_labelme=4", "test=false")
    train(seg)
    detector = NucleusDetector(method="checkpoint", checkpoint=str(Path(seg.paths.output_dir) / "checkpoints" / "last.ckpt"),
                               min_size=1)
    image = np.random.default_rng(0).random((48, 48), dtype=np.float32)
    labels = detector(image)
    assert labels.shape == (48, 48) and labels.dtype == np.int32
    assert np.array_equal(labels > 0, detector.foreground(image))


def test_logged_visuals_outline_the_nuclei(cfg_train):
    cfg = cfg_train("test=false")
    train(cfg)
    from types import SimpleNamespace

    from stainless.data.datasets import LoadedSample
    from stainless.models.checkpoint import module_from_checkpoint

    module, _ = module_from_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    image, labels = _tissue(0, size=64)
    field = LoadedSample(np.random.default_rng(0).random((1, 64, 64), dtype=np.float32), image[None], labels)
    fields = SimpleNamespace(samples=["f"], patch_size=32, load=lambda i: field)
    module.trainer = SimpleNamespace(world_size=1, global_rank=0)  # a stand-in: validate_fields asks who it is
    module.eval()
    values = module.validate_fields(fields)
    assert values["val_field/missed"] > 0 or values["val_field/nuclei_f1"] > 0
    panels = module.visuals()
    assert panels["nuclei"].shape == (1, 3, 64, 64)
    # outlines are drawn in colour on a grey picture
    rgb = panels["nuclei"]
    assert ((rgb[:, 0] - rgb[:, 2]).abs() > 0.3).any()
