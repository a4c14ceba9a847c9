"""A new user's first hour: wrong inputs refused with the file and the fix, several files as one input, results
judged against baselines, an uncertainty map that points the right way, objects scored on whole images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import CONF

from stainless.data.datamodule import MicroscopyDataModule
from stainless.data.datasets import load_sample
from stainless.data.samples import paired_folder_samples
from stainless.data.validate import mask_problem
from stainless.evaluation.report import verdict
from stainless.evaluation.segmentation import baseline_masks, true_objects
from stainless.inference.nuclei import NucleusDetector
from stainless.inference.tiling import predict_tiled
from stainless.inference.uncertainty import object_disagreement, spread_map, uncertainty_map
from stainless.io import ImageReadError
from stainless.metrics.nuclei import MapSeparation, error_kinds, error_masks, score_nuclei
from stainless.utils.overrides import unknown_keys

ROOT = Path(__file__).resolve().parents[1]


def _disks(size: int = 64, centres=((16, 16), (16, 44), (46, 30)), radius: int = 9) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.uint16)
    for i, (cy, cx) in enumerate(centres, 1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = i
    return labels


def _folder_pairs(root: Path, masks: list[np.ndarray], sources: list[np.ndarray] | None = None) -> None:
    rng = np.random.default_rng(0)
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "tgt").mkdir(parents=True, exist_ok=True)
    for i, mask in enumerate(masks):
        source = sources[i] if sources else rng.integers(0, 255, mask.shape[-2:] if mask.ndim == 2 else mask.shape[:2],
                                                         dtype=np.uint8)
        tifffile.imwrite(root / "src" / f"im{i}.tif", source)
        tifffile.imwrite(root / "tgt" / f"im{i}.tif", mask)


def _setup(root: Path, **options) -> MicroscopyDataModule:
    options = {"source_dir": str(root / "src"), "target_dir": str(root / "tgt"), "patch_size": 32, "target_type": "mask",
               "split": {"val_fraction": 0.25, "test_fraction": 0.0}, **options}
    datamodule = MicroscopyDataModule(**options)
    datamodule.setup("fit")
    return datamodule


# -- masks that are not masks ----------------------------------------------------------------------------------


def test_a_colour_label_image_is_refused_unless_grey_or_read_as_a_palette(tmp_path):
    labels = _disks()
    palette = np.array([[0, 0, 0], [255, 0, 0], [250, 10, 0], [255, 0, 7]], np.uint8)  # three reds: same red channel
    colour = palette[labels]
    _folder_pairs(tmp_path, [colour] * 4)
    with pytest.raises(ImageReadError, match=r"tgt/im\d\.tif: a colour mask \(3 channels that differ\).*data.mask_mode=palette"):
        _setup(tmp_path)
    datamodule = _setup(tmp_path, mask_mode="palette")  # each colour one cell
    loaded = load_sample(datamodule.samples["train"][0], {}, "mask", mask_mode="palette")
    assert len(np.unique(loaded.labels)) - 1 == 3 and (loaded.target == (labels > 0)).all()
    grey_as_rgb = np.repeat(labels[..., None].astype(np.uint8) * 60, 3, -1)  # equal channels: read as one
    _folder_pairs(tmp_path / "grey", [grey_as_rgb] * 4)
    loaded = load_sample(_setup(tmp_path / "grey").samples["train"][0], {}, "mask", mask_mode="instances")
    assert len(np.unique(loaded.labels)) - 1 == 3


def test_an_intensity_image_given_as_a_mask_is_refused(tmp_path):
    yy, xx = np.mgrid[:64, :64]
    rng = np.random.default_rng(1)
    dapi = (2000 + 800 * np.exp(-((yy - 30) ** 2 + (xx - 30) ** 2) / 200) + rng.normal(0, 60, (64, 64))).astype(np.uint16)
    assert mask_problem(dapi.astype(np.float32)) and "intensity image" in mask_problem(dapi.astype(np.float32))
    assert mask_problem(_disks().astype(np.float32)) is None  # instance ids: piecewise constant
    assert mask_problem((_disks() > 0).astype(np.float32)) is None
    assert "fractional" in mask_problem(np.random.default_rng(0).random((16, 16), dtype=np.float32))
    _folder_pairs(tmp_path, [_disks()] * 3 + [dapi])
    with pytest.raises(ImageReadError, match=r"tgt/im3\.tif: this mask has \d+ distinct values.*intensity image"):
        _setup(tmp_path)


def test_inputs_with_different_channel_counts_are_named(tmp_path):
    rng = np.random.default_rng(0)
    sources = [rng.integers(0, 255, (64, 64), dtype=np.uint8) for _ in range(4)]
    sources[2] = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)  # an RGB file among grey ones
    _folder_pairs(tmp_path, [_disks()] * 4, sources)
    with pytest.raises(ImageReadError, match=r"src/im2\.tif: 3 input channel\(s\), but .*im0\.tif \(like most\) has 1.*data\.source_channels"):
        _setup(tmp_path)
    _setup(tmp_path, source_channels=[0])  # the fix the message names


# -- several files as one input --------------------------------------------------------------------------------


def test_a_list_of_folders_is_stacked_as_channels_in_order(tmp_path):
    for plane in ("z0", "z6", "z12"):
        (tmp_path / plane).mkdir()
        for name in ("a", "b"):
            tifffile.imwrite(tmp_path / plane / f"{name}.tif", np.full((32, 32), int(plane[1:]) * 10 + 1, np.uint16))
    (tmp_path / "dapi").mkdir()
    for name in ("a", "b"):
        tifffile.imwrite(tmp_path / "dapi" / f"{name}.tif", np.ones((32, 32), np.uint16))
    samples = paired_folder_samples([tmp_path / "z0", tmp_path / "z6", tmp_path / "z12"], tmp_path / "dapi")
    raw = load_sample(samples[0], {"mode": "range", "vmin": 0, "vmax": 1, "clip": False}).source
    assert raw.shape == (3, 32, 32) and raw[:, 0, 0].tolist() == [1, 61, 121]  # the folders' order
    (tmp_path / "z12" / "b.tif").unlink()
    with pytest.raises(ImageReadError, match=r"z12: no file for b of .*z0 \(stacked as channels of one input\); this folder holds a"):
        paired_folder_samples([tmp_path / "z0", tmp_path / "z12"], tmp_path / "dapi")


# -- results judged against baselines --------------------------------------------------------------------------


def _stats(**means):
    return {k: {"mean": v, "std": 0.01} for k, v in means.items()}


def test_verdict_names_every_score_where_a_baseline_wins():
    judged = verdict({"model": _stats(ssim=0.40, mse=0.02, nuclei_f1=0.5),
                      "baseline_input": _stats(ssim=0.30, mse=0.03, nuclei_f1=0.6),
                      "baseline_mean": _stats(ssim=0.50, mse=0.01, nuclei_f1=0.0)})
    assert not judged["beats_all"]
    assert len(judged["losses"]) == 3  # nuclei_f1 to the input; ssim and mse (lower is better) to the mean
    assert any("baseline_mean on mse: 0.02 against 0.01 (lower is better)" in s for s in judged["losses"])
    assert "loses on mse, nuclei_f1, ssim" in judged["line"]
    assert verdict({"model": _stats(iou=0.9), "baseline_otsu": _stats(iou=0.5)})["beats_all"]


def test_segmentation_baselines_take_the_minority_side_and_everything():
    labels = _disks()
    image = np.where(labels > 0, 0.2, 0.8).astype(np.float32)[None]  # dark cells on a bright background
    masks = baseline_masks(image)
    assert (masks["baseline_otsu"] == (labels > 0)).all() and masks["baseline_all_foreground"].all()


def test_ground_truth_cells_are_never_split():
    """Touching cells drawn with 1-px lines between them stay one object each (connected components, not a
    watershed that would cut an elongated cell in two)."""
    truth = np.zeros((40, 90), bool)
    truth[5:35, 2:30] = truth[5:35, 31:88] = True  # two touching cells, the second long; a 1-px gap at x=30
    objects = true_objects(truth, None)
    assert objects.max() == 2
    assert len(np.unique(objects[5:35, 31:88])) == 1


# -- uncertainty that points the right way ---------------------------------------------------------------------


def test_uncertainty_map_ranks_invented_nuclei_above_real_ones():
    """A real nucleus drawn bright and the same under every transform, an invented one dim that comes and goes.
    The plain spread grows with brightness and ranks the real one higher (the bug); the relative map ranks the
    invented one higher."""
    true = _disks(centres=((16, 16),))
    pred_labels = _disks(centres=((16, 16), (46, 40)))  # nucleus 2 invented
    rng = np.random.default_rng(0)
    draws = np.zeros((8, 1, 64, 64), np.float32)
    draws[:, 0][:, pred_labels == 1] = 0.9 + rng.normal(0, 0.06, (8, int((pred_labels == 1).sum())))
    draws[:, 0][:, pred_labels == 2] = 0.35 + rng.normal(0, 0.05, (8, int((pred_labels == 2).sum())))
    draws = torch.from_numpy(draws)
    score = score_nuclei(true, pred_labels)
    assert score["hallucinated_ids"] == [2]
    separation = MapSeparation()
    wrong, right = error_masks(true, pred_labels, score)
    separation.update({"uncertainty": uncertainty_map(draws).numpy(), "plain_std": spread_map(draws).numpy()},
                      wrong, right, error_kinds(true, pred_labels, score))
    aucs = separation.compute()
    assert aucs["uncertainty"]["invented_auc"] > 0.9
    assert aucs["plain_std"]["invented_auc"] < 0.5  # the old definition pointed the wrong way


def test_object_disagreement_scores_each_nucleus_by_how_often_it_comes_back():
    """Nucleus 1 is detected the same way in all 8 samples, nucleus 2 in 3 of them, and a speck of background in
    2: the map is 0 on nucleus 1, 1 - 3/8 on nucleus 2, 2/8 on the speck, 0 elsewhere."""
    labels = _disks(centres=((16, 16), (46, 40)))
    detector = NucleusDetector(sigma=0, threshold=0.5, min_contrast=0, min_size=5)
    draws = np.zeros((8, 1, 64, 64), np.float32)
    draws[:, 0][:, labels == 1] = 0.9
    draws[:3, 0][:, labels == 2] = 0.8
    draws[3:5, 0, 2:6, 56:62] = 0.9
    picture, risks = object_disagreement(torch.from_numpy(draws), labels, detector)
    assert risks == {1: pytest.approx(0.0), 2: pytest.approx(5 / 8)}
    assert np.allclose(picture[labels == 1], 0) and np.allclose(picture[labels == 2], 5 / 8)
    assert np.allclose(picture[2:6, 56:62], 2 / 8)
    assert picture[labels == 0].sum() == pytest.approx(24 * 2 / 8)
    # a prediction without nuclei: only the share of samples that detect one
    empty, none = object_disagreement(torch.from_numpy(draws), np.zeros_like(labels), detector)
    assert none == {} and np.allclose(empty[labels == 1], 1.0)


def test_object_disagreement_flags_every_pixel_of_an_invented_nucleus_that_moves():
    """Both nuclei are drawn equally bright in every sample, but the invented one moves by 4 px in half of them:
    its outline changes, not its brightness. The object map ranks it above the real one on every pixel; the
    pixel spread only sees its rim."""
    true = _disks(centres=((16, 16),))
    labels = _disks(centres=((16, 16), (44, 40)))  # nucleus 2 invented
    draws = np.zeros((8, 1, 64, 64), np.float32)
    for k in range(8):
        moved = _disks(centres=((16, 16), (44, 40 + 4 * (k % 2))))
        draws[k, 0][moved > 0] = 0.8
    draws = torch.from_numpy(draws)
    picture, _ = object_disagreement(draws, labels, NucleusDetector(sigma=0, threshold=0.5, min_size=5))
    score = score_nuclei(true, labels)
    separation = MapSeparation()
    wrong, right = error_masks(true, labels, score)
    separation.update({"objects": picture, "relative": uncertainty_map(draws).numpy()}, wrong, right,
                      error_kinds(true, labels, score))
    aucs = separation.compute()
    assert aucs["objects"]["invented_auc"] == 1.0
    assert aucs["relative"]["invented_auc"] < 0.7  # its pixels that stay covered have no spread


# -- objects scored on the whole image, never per tile ---------------------------------------------------------


def test_a_nucleus_across_a_tile_boundary_is_found_once():
    labels = _disks(size=64, centres=((32, 32), (12, 12)), radius=7)  # the first straddles the 32-px tile seam
    image = torch.from_numpy((labels > 0).astype(np.float32) * 0.8)[None]
    stitched = predict_tiled(lambda b: b, image, tile_size=32, overlap=0.25)[0].numpy()
    detector = NucleusDetector(min_size=5)
    found = detector(stitched)
    score = score_nuclei(labels, found)
    assert found.max() == 2 and score["f1"] == 1.0
    per_tile = [detector(stitched[y:y + 32, x:x + 32]).max() for y in (0, 32) for x in (0, 32)]
    assert sum(per_tile) > 2  # what per-tile scoring would have counted: the seam nucleus four times


# -- errors a user can act on ----------------------------------------------------------------------------------


def test_a_mistyped_key_gets_did_you_mean():
    (message,) = unknown_keys("train", ["data.patch_sze=64"], CONF)
    assert "no key 'data.patch_sze'" in message and "did you mean data.patch_size" in message
    assert unknown_keys("train", ["data=paired_folders", "data.source_dir=/x", "trainer.max_epochs=3"], CONF) == []
    assert unknown_keys("train", ["experiment=rbc_segmentation", "model.arch=fpn"], CONF) == []
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "model.lrr=0.1"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: no key 'model.lrr' in the config; did you mean model.lr? (to add a new key on purpose: +model.lrr=...)"]


# -- evaluation of new images with a trained segmenter ---------------------------------------------------------


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    from conftest import tiny_train_config

    from stainless.train import train

    cfg = tiny_train_config(tmp_path_factory.mktemp("first_hour_segmenter"), "experiment=rbc_segmentation",
                            "backbone.encoder_weights=null", "data.synthetic.n_frames=6", "data.synthetic.n_labelme=4",
                            "data.synthetic.size=64", "data.patch_size=64", "data.batch_size=2", "test=false")
    train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


def test_evaluate_refuses_wrong_inputs_and_judges_the_model(segmenter, cfg_eval, tmp_path):
    from stainless.evaluate import evaluate
    from stainless.utils.config import RUN_MARKERS

    rng = np.random.default_rng(0)
    labels = _disks()
    tifffile.imwrite(tmp_path / "rgb.tif", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    tifffile.imwrite(tmp_path / "grey.tif", np.where(labels > 0, 60, 180).astype(np.uint8))
    tifffile.imwrite(tmp_path / "mask.tif", labels)
    dapi = (2000 + rng.normal(0, 80, (64, 64))).astype(np.uint16)
    tifffile.imwrite(tmp_path / "dapi.tif", dapi)
    # an RGB image given to a one-channel model: named, with the setting that fixes it; nothing written
    cfg = cfg_eval(f"ckpt_path={segmenter}", f"input={tmp_path / 'rgb.tif'}", run="rgb")
    with pytest.raises(ImageReadError, match=r"rgb\.tif: 3 input channel\(s\), but the checkpoint's model takes 1; .*source_channels"):
        evaluate(cfg)
    assert not [m for m in RUN_MARKERS if (Path(cfg.paths.output_dir) / m).exists()]  # the directory stays reusable
    evaluate(cfg_eval(f"ckpt_path={segmenter}", f"input={tmp_path / 'rgb.tif'}", "source_channels=[1]", run="rgb1"))
    # an intensity image given as the truth mask
    with pytest.raises(ImageReadError, match=r"dapi\.tif: this mask has \d+ distinct values"):
        evaluate(cfg_eval(f"ckpt_path={segmenter}", f"input={tmp_path / 'grey.tif'}", f"target={tmp_path / 'dapi.tif'}",
                          run="dapi"))
    # a proper pair: model beside both baselines, a verdict, and a report saying so
    summary = evaluate(cfg_eval(f"ckpt_path={segmenter}", f"input={tmp_path / 'grey.tif'}",
                                f"target={tmp_path / 'mask.tif'}", "report=markdown", run="good"))
    assert set(summary["metrics"]) == {"model", "baseline_otsu", "baseline_all_foreground"}
    assert summary["metrics"]["baseline_otsu"]["iou"]["mean"] == pytest.approx(1.0)  # dark disks: Otsu is perfect
    assert summary["verdict"]["line"].startswith("Verdict:") and not summary["verdict"]["beats_all"]
    report = (Path(summary["output_dir"]) / "report.md").read_text()
    assert "The model loses to baseline_otsu on iou" in report


def test_object_scale_is_recorded_from_the_annotations_and_sizes_the_post_processing(segmenter, cfg_eval, tmp_path):
    from stainless.evaluate import evaluate
    from stainless.metrics.objects import size_parameters
    from stainless.models.checkpoint import load_checkpoint

    scale = load_checkpoint(segmenter)["hyper_parameters"]["object_scale"]
    # the synthetic cells have radii 11-16 px (LabelMe polygons): diameters about 22-32 px
    assert 18 < scale["diameter_median"] < 36 and scale["n_objects"] >= 4
    assert scale["diameter_p5"] <= scale["diameter_median"] <= scale["diameter_p95"]
    summary = evaluate(cfg_eval(f"ckpt_path={segmenter}", "report=markdown", "segmentation.tune=false", run="scaled"))
    sizes = summary["object_sizes"]
    assert sizes["source"].startswith("the training annotations")
    assert sizes["min_distance"] == round(0.3 * scale["diameter_median"]) and sizes["max_distance"] == pytest.approx(
        scale["diameter_median"], abs=0.05)
    assert sizes["split"]["source"] == "default (tuning off)"
    # tuned (the default): the split distance that scores best on the validation and training fields, among fractions
    # of the training diameter and of each image's own
    tuned = evaluate(cfg_eval(f"ckpt_path={segmenter}", "report=markdown", run="tuned"))["object_sizes"]
    assert tuned["split"]["key"] == "min_distance" and tuned["split"]["source"].startswith("tuned on 1 validation field")
    fraction = tuned["split_fraction"]
    assert tuned["min_distance"] == (tuned["split"]["value"] if fraction is None else
                                     max(2, round(fraction * scale["diameter_median"])))
    assert (str(tuned["min_distance"]) if fraction is None else f"{fraction:g} x diameter") in tuned["split"]["scores"]
    assert tuned["split"]["f1"] == max(tuned["split"]["scores"].values()) >= tuned["split"]["default_f1"]
    assert "optimistic" not in tuned["split"]["source"]
    for stage in ("val", "train"):  # scoring the fields tuned on is flagged
        on = evaluate(cfg_eval(f"ckpt_path={segmenter}", "report=markdown", f"stage={stage}", run=f"on_{stage}"))
        assert on["object_sizes"]["split"]["source"].endswith("these are images it was tuned on, so their object "
                                                              "scores are optimistic"), stage
    given = evaluate(cfg_eval(f"ckpt_path={segmenter}", "report=markdown", "segmentation.min_distance=5", run="given"))
    assert given["object_sizes"]["min_distance"] == 5
    assert given["object_sizes"]["split"]["source"] == "segmentation.min_distance=5"
    assert 0 <= summary["mean_ap_50_95"] <= summary["objects_by_iou"]["0.5"]["f1"] + 1e-9
    given = size_parameters({"diameter": 20, "min_size": "auto", "min_distance": 9, "max_distance": "auto"}, scale)
    assert (given["min_distance"], given["max_distance"], given["source"]) == (9, 20.0, "segmentation.diameter=20")
    with pytest.raises(ValueError, match=r"segmentation.diameter=-3: must be auto or a positive number"):
        size_parameters({"diameter": -3}, scale)
    assert size_parameters({}, None)["source"].startswith("defaults")
