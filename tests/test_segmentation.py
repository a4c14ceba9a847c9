"""Segmentation: LabelMe parsing, mask folders, synthetic RBC data, losses, models, training."""

import base64
import io
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch

from stainless.data.datasets import load_sample
from stainless.data.labelme import LabelMeError, rasterize_labelme, read_labelme_image
from stainless.data.samples import Sample, labelme_samples, paired_folder_samples, split_samples
from stainless.data.synthetic_rbc import generate_rbc_dataset
from stainless.models.segmentation_module import SegmentationLoss, SegmentationModule
from stainless.train import train


def _png_b64(array):
    buffer = io.BytesIO()
    iio.imwrite(buffer, array, extension=".png")
    return base64.b64encode(buffer.getvalue()).decode()


def _write(path, shapes, image=None, image_path=None, size=(40, 50)):
    data = {"shapes": shapes, "imageHeight": size[0], "imageWidth": size[1],
            "imagePath": image_path, "imageData": _png_b64(image) if image is not None else None}
    path.write_text(json.dumps(data))
    return path


def test_each_shape_type_rasterises_as_its_own_instance(tmp_path):
    mask = np.zeros((4, 6), np.uint8)
    mask[1:3, 2:5] = 1
    shapes = [
        {"label": "cell", "shape_type": "polygon", "points": [[2, 2], [12, 2], [12, 10], [2, 10]]},
        {"label": "cell", "shape_type": "rectangle", "points": [[20, 5], [25, 9]]},
        {"label": "cell", "shape_type": "circle", "points": [[40, 25], [44, 25]]},
        {"label": "other", "shape_type": "mask", "points": [[30, 30], [35, 33]], "mask": _png_b64(mask * 255)},
    ]
    path = _write(tmp_path / "a.json", shapes)
    instances, classes = rasterize_labelme(path)
    assert instances.shape == (40, 50)
    assert set(np.unique(instances)) == {0, 1, 2, 3, 4}
    assert (instances == 2).sum() == 6 * 5  # rectangle rows 5..9, cols 20..25 inclusive
    assert abs((instances == 3).sum() - np.pi * 16) < 10  # circle of radius 4
    assert (instances == 4).sum() == mask.sum() and instances[31, 32] == 4
    assert set(np.unique(classes)) == {0, 1}
    _, mapped = rasterize_labelme(path, label_map={"cell": 1, "other": 2})
    assert mapped[31, 32] == 2 and mapped[5, 5] == 1
    instances_only_cells, _ = rasterize_labelme(path, label_map={"cell": 1})
    assert instances_only_cells[31, 32] == 0  # unmapped labels are ignored


def test_touching_shapes_stay_separate_instances(tmp_path):
    shapes = [{"label": "c", "shape_type": "rectangle", "points": [[0, 0], [9, 9]]},
              {"label": "c", "shape_type": "rectangle", "points": [[10, 0], [19, 9]]}]
    instances, classes = rasterize_labelme(_write(tmp_path / "t.json", shapes))
    assert (instances == 1).sum() == 100 and (instances == 2).sum() == 100 and (classes == 1).sum() == 200


def test_embedded_and_external_images(tmp_path):
    image = (np.arange(40 * 50) % 251).astype(np.uint8).reshape(40, 50)
    embedded = _write(tmp_path / "e.json", [], image=image)
    np.testing.assert_array_equal(read_labelme_image(embedded)[0], image)
    iio.imwrite(tmp_path / "pic.png", image)
    external = _write(tmp_path / "x.json", [], image_path="pic.png")
    np.testing.assert_array_equal(read_labelme_image(external)[0], image)


def test_image_path_leaving_the_dataset_is_refused(tmp_path):
    (tmp_path / "outside.png").write_bytes(b"")
    inner = tmp_path / "dataset"
    inner.mkdir()
    path = _write(inner / "evil.json", [], image_path="../outside.png")
    with pytest.raises(LabelMeError, match=r"evil\.json: imagePath '\.\./outside\.png' points outside"):
        read_labelme_image(path, root=inner)


@pytest.mark.parametrize(
    "shape,message",
    [
        ({"label": "c", "shape_type": "polygon", "points": [[1, 1], [5, 5]]}, "at least three points"),
        ({"label": "c", "shape_type": "hexagon", "points": [[1, 1]]}, "unknown shape type"),
    ],
)
def test_bad_shapes_name_file_and_problem(tmp_path, shape, message):
    with pytest.raises(LabelMeError, match=f"bad.json: shape 0.*{message}"):
        rasterize_labelme(_write(tmp_path / "bad.json", [shape]))


def test_invalid_json_is_named(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(LabelMeError, match=r"broken\.json: not a valid LabelMe JSON"):
        rasterize_labelme(tmp_path / "broken.json")


def test_mask_folders_binary_and_instances(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    tifffile.imwrite(tmp_path / "img" / "a.tif", np.random.default_rng(0).integers(0, 999, (32, 32)).astype(np.uint16))
    labels = np.zeros((32, 32), np.uint16)
    labels[2:8, 2:8], labels[10:20, 10:20] = 7, 9
    tifffile.imwrite(tmp_path / "msk" / "a.tif", labels)
    (sample,) = paired_folder_samples(tmp_path / "img", tmp_path / "msk")
    norm = {"mode": "percentile"}
    binary = load_sample(sample, norm, "mask", mask_mode="binary")
    assert set(np.unique(binary.target)) == {0, 1} and binary.labels is None
    instances = load_sample(sample, norm, "mask", mask_mode="instances")
    assert set(np.unique(instances.labels)) == {0, 7, 9} and instances.target.sum() == 36 + 100
    classes = load_sample(sample, norm, "mask", mask_mode="classes")
    assert set(np.unique(classes.target)) == {0, 7, 9}


def test_rbc_generator_labelme_matches_masks(tmp_path):
    root = generate_rbc_dataset(tmp_path / "rbc", n_frames=2, n_labelme=2, size=96, cells_per_frame=4,
                                video_frames=3, video_cells=2)
    (sample,) = labelme_samples(root / "labelme")[:1]
    loaded = load_sample(sample, {"mode": "range", "vmin": 0, "vmax": 255}, "mask", labelme_root=str(root / "labelme"))
    mask = iio.imread(root / "masks" / "frame_000.png") > 0
    iou = (mask & (loaded.target > 0)).sum() / (mask | (loaded.target > 0)).sum()
    assert iou > 0.9  # polygons from LabelMe reproduce the generator's masks
    assert len(np.unique(loaded.labels)) - 1 == len(np.unique(tifffile.imread(root / "labels" / "frame_000.tif"))) - 1
    image = iio.imread(root / "images" / "frame_000.png").astype(float)
    assert image[mask].mean() < image[~mask].mean()  # cells are darker than the background on average
    assert (root / "videos" / "UREA.tif").is_file() and (root / "videos" / "truth.csv").is_file()


def test_split_last_keeps_the_last_samples_for_validation():
    samples = [Sample(f"s{i:02d}", Path(f"s{i:02d}")) for i in range(20)]
    split = split_samples(samples, 0.1, 0.0, 0, mode="last")
    assert [s.name for s in split["val"]] == ["s18", "s19"]
    assert [s.name for s in split["train"]] == [f"s{i:02d}" for i in range(18)]


@pytest.mark.parametrize("name", ["bce_jaccard", "dice", "focal_dice"])
def test_losses_are_lower_for_better_predictions(name):
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, 4:12, 4:12] = 1
    good = (target.float() * 12 - 6)[:, None]
    bad = -good
    loss = SegmentationLoss(name, classes=1, pos_weight=3.0)
    assert loss(good, target)["total"] < loss(bad, target)["total"]


def test_positive_class_weight_changes_bce():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, :2] = 1
    logits = torch.zeros(1, 1, 8, 8)
    plain = SegmentationLoss("bce_jaccard", pos_weight=None)(logits, target)["bce"]
    weighted = SegmentationLoss("bce_jaccard", pos_weight=5.0)(logits, target)["bce"]
    assert weighted > plain


ARCHS = ["unet", "unetplusplus", "fpn", "deeplabv3plus", "linknet", "manet"]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_runs_binary_and_multiclass(arch):
    backbone = {"name": "resnet18", "encoder_name": "resnet18", "encoder_weights": None}
    for in_channels, classes in ((1, 1), (3, 3)):
        module = SegmentationModule(arch, backbone, in_channels, classes, loss={"name": "dice"},
                                    optimizer={"_target_": "torch.optim.Adam", "_partial_": True}).eval()
        assert module(torch.rand(1, in_channels, 64, 64)).shape == (1, classes, 64, 64)


def test_auto_pos_weight_and_training_step(cfg_train, tmp_path):
    cfg = cfg_train(
        "experiment=rbc_segmentation", "data.synthetic.n_frames=6", "data.synthetic.n_labelme=6",
        "data.synthetic.size=64", "+data.synthetic.video_frames=2", "+data.synthetic.video_cells=2",
        "+data.synthetic.cells_per_frame=3", "data.patch_size=64", "data.batch_size=2", "trainer.max_epochs=2",
    )
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    summary = json.loads((run / "summary.json").read_text())
    assert {"val/iou", "val/soft_iou", "val/dice", "val/precision", "val/recall", "val/iou_best"} <= set(metrics)
    from stainless.models.checkpoint import load_checkpoint

    hp = load_checkpoint(summary["best_model_path"])["hyper_parameters"]
    assert isinstance(hp["loss"]["pos_weight"], float) and hp["loss"]["pos_weight"] > 1  # cells are the minority
    assert list((run / "images").glob("epoch_*.png"))


def test_segmenter_lr_warms_up_then_decays_to_its_final_factor(cfg_train, tmp_path):
    import csv

    from stainless.models.checkpoint import load_checkpoint

    cfg = cfg_train(
        "experiment=rbc_segmentation", "data.synthetic.n_frames=6", "data.synthetic.n_labelme=6",
        "data.synthetic.size=64", "+data.synthetic.video_frames=2", "+data.synthetic.video_cells=2",
        "+data.synthetic.cells_per_frame=3", "data.patches_per_image=null", "data.samples_per_epoch=8",
        "data.batch_size=2", "trainer.limit_train_batches=null", "trainer.max_epochs=2", "test=false",
        "model.lr=1e-3", "model.lr_schedule={warmup_steps:2,final_factor:0.1}", "logger=csv",
        "trainer.log_every_n_steps=1",
    )
    train(cfg)
    run = Path(cfg.paths.output_dir)
    (path,) = run.glob("csv/**/metrics.csv")
    rates = [float(r["train/lr"]) for r in csv.DictReader(open(path)) if r.get("train/lr")]
    assert len(rates) == 8  # 2 epochs of 4 batches
    assert rates[0] < rates[1] and rates[1] == max(rates)  # linear warm-up over 2 batches
    assert all(a >= b for a, b in zip(rates[1:], rates[2:])) and rates[2] > rates[-1]  # then decaying
    assert rates[-1] == pytest.approx(1e-4)  # cosine down to 0.1 x 1e-3 at the last batch
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")["optimizer_states"]
    assert all(g["lr"] == pytest.approx(1e-4) and g["initial_lr"] == pytest.approx(1e-3)
               for opt in state for g in opt["param_groups"])


def test_labelme_export_command(tmp_path):
    from stainless.data.labelme import main

    src = tmp_path / "ann"
    src.mkdir()
    image = np.full((40, 50), 100, np.uint8)
    _write(src / "a.json", [{"label": "cell", "shape_type": "rectangle", "points": [[2, 2], [6, 8]]},
                            {"label": "junk", "shape_type": "circle", "points": [[30, 20], [33, 20]]}], image=image)
    assert main([str(src), str(tmp_path / "out"), "--label", "cell=1", "--label", "junk=2"]) == 0
    mask = iio.imread(tmp_path / "out" / "masks" / "a.png")
    labels = tifffile.imread(tmp_path / "out" / "labels" / "a.tif")
    assert mask[5, 4] == 1 and mask[20, 30] == 2 and set(np.unique(labels)) == {0, 1, 2}
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "images" / "a.tif"), image)
    assert main([str(src), str(tmp_path / "out")]) == 1  # never overwrites an export


@pytest.mark.parametrize("mode,classes", [("trimap_binary", {0, 1}), ("trimap_classes", {0, 1, 2})])
def test_oxford_pet_layout_from_disk(cfg_train, tmp_path, mode, classes):
    from stainless.train import build

    root = tmp_path / "data" / "oxford-iiit-pet"
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        iio.imwrite(root / "images" / f"cat_{i}.jpg", rng.integers(0, 255, (48, 48, 3)).astype(np.uint8))
        trimap = np.full((48, 48), 2, np.uint8)
        trimap[10:30, 10:30], trimap[10:30, 9] = 1, 3
        iio.imwrite(root / "annotations" / "trimaps" / f"cat_{i}.png", trimap)
    cfg = cfg_train("experiment=rbc_segmentation", "data=oxford_pet", f"data.mask_mode={mode}", "data.patch_size=32")
    dm = build(cfg.data)
    dm.prepare_data()  # download is null: nothing is fetched
    dm.setup("fit")
    assert dm.in_channels == 3
    loaded = dm.datasets["train"].load(0)
    assert set(np.unique(loaded.target)) == classes
    assert loaded.target[20, 20] == 1 and loaded.target[0, 0] == 0


@pytest.mark.parametrize("name", ["bce_jaccard", "dice", "focal_dice"])
def test_multiclass_losses_prefer_the_right_class(name):
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, 2:8] = 1
    target[:, 10:14] = 2
    good = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 8
    bad = good.roll(1, dims=1)
    loss = SegmentationLoss(name, classes=3, pos_weight=[0.5, 1.0, 2.0])
    assert loss(good, target)["total"] < loss(bad, target)["total"]


def test_a_dataset_from_an_older_generator_is_written_again(tmp_path):
    import json
    import shutil

    options = {"n_frames": 2, "n_labelme": 1, "size": 64, "cells_per_frame": 3, "video_frames": 3, "video_cells": 2}
    root = generate_rbc_dataset(tmp_path / "rbc", **options)
    manifest = json.loads((root / "dataset.json").read_text())
    ground_truth = root / "videos" / "UREA_GT"
    assert ground_truth.is_dir()
    shutil.rmtree(ground_truth)  # what a dataset made before the tracking ground truth looks like
    (root / "dataset.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "generator"}))
    generate_rbc_dataset(tmp_path / "rbc", **options)
    assert ground_truth.is_dir() and json.loads((root / "dataset.json").read_text()) == manifest
    with pytest.raises(FileExistsError, match="other parameters"):  # another dataset is never replaced
        generate_rbc_dataset(tmp_path / "rbc", **{**options, "n_frames": 3})
