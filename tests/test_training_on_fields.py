"""Training on real-data layouts: epochs sized by crops, a fixed validation tile set, region splits, carved
splits, k-fold cross-validation, foreground-centred crops, whole-field validation, and settings refused early."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from stainless.data.datamodule import MicroscopyDataModule
from stainless.data.samples import Sample, region_folds, region_split
from stainless.io import ImageReadError
from stainless.train import train

NORM = {"mode": "range", "vmin": 0, "vmax": 1000}


def _fields(root: Path, sizes: list[tuple[int, int]], sparse: bool = False) -> tuple[Path, Path]:
    """Input/target TIFF pairs of the given sizes; targets hold bright squares (sparse: one per field)."""
    rng = np.random.default_rng(0)
    (root / "src").mkdir(parents=True)
    (root / "tgt").mkdir()
    for i, (h, w) in enumerate(sizes):
        target = np.zeros((h, w), np.uint16)
        spots = [(h // 3, w // 3)] if sparse else [(y, x) for y in range(4, h - 8, 16) for x in range(4, w - 8, 16)]
        for y, x in spots:
            target[y : y + 6, x : x + 6] = 900
        source = (rng.random((h, w)) * 300 + (1000 - target) * 0.5).astype(np.uint16)
        tifffile.imwrite(root / "src" / f"f{i}.tif", source)
        tifffile.imwrite(root / "tgt" / f"f{i}.tif", target)
    return root / "src", root / "tgt"


def _module(src: Path, tgt: Path, **options) -> MicroscopyDataModule:
    settings = dict(source_dir=str(src), target_dir=str(tgt), normalization=NORM, patch_size=32, batch_size=4,
                    split={"val_fraction": 0.2, "test_fraction": 0.2, "seed": 0})
    settings.update(options)
    dm = MicroscopyDataModule(**settings)
    dm.setup("fit")
    return dm


def _rects(samples: list[Sample]) -> list[tuple[int, int, int, int]]:
    return [s.region for s in samples]


def _distance(a, b) -> int:
    """Pixels between two rectangles (top, left, height, width): 0 when they touch or overlap."""
    dy = max(b[0] - (a[0] + a[2]), a[0] - (b[0] + b[2]), 0)
    dx = max(b[1] - (a[1] + a[3]), a[1] - (b[1] + b[3]), 0)
    overlap = dy == 0 and dx == 0 and not (a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1]
                                           or b[1] + b[3] <= a[1])
    return -1 if overlap else max(dy, dx)


def test_steps_per_epoch_follow_samples_per_epoch_not_the_image_count(tmp_path):
    few = _module(*_fields(tmp_path / "few", [(64, 64)] * 5), samples_per_epoch=40)
    many = _module(*_fields(tmp_path / "many", [(64, 64)] * 10 + [(128, 96)] * 4), samples_per_epoch=40)
    assert len(few.samples["train"]) < len(many.samples["train"])
    assert len(few.train_dataloader()) == len(many.train_dataloader()) == 10
    # patches_per_image, when set, still sizes the epoch by images
    per_image = _module(*_fields(tmp_path / "pp", [(64, 64)] * 5), patches_per_image=4)
    assert len(per_image.datasets["train"]) == 4 * len(per_image.samples["train"])
    assert "10 optimiser steps per epoch, 30 in 3 epochs" in many.describe(1, 3)


def test_crops_are_drawn_in_proportion_to_field_area(tmp_path):
    dm = _module(*_fields(tmp_path, [(256, 256), (64, 64)]), split={"val_fraction": 0, "test_fraction": 0},
                 samples_per_epoch=400)
    torch.manual_seed(0)
    counts = np.bincount([dm.datasets["train"][k]["index"] for k in range(400)], minlength=2)
    assert counts[0] / counts.sum() == pytest.approx(16 / 17, abs=0.04)  # 256^2 vs 64^2 pixels


def test_validation_tiles_are_a_fixed_bounded_set(tmp_path):
    src, tgt = _fields(tmp_path, [(128, 128)] * 6)
    one = _module(src, tgt, val_tiles=5)
    two = _module(src, tgt, val_tiles=5)
    assert len(one.datasets["val"]) == 5  # the full grid would be 16 tiles per field
    assert one.datasets["val"].index == two.datasets["val"].index
    first = [b["source"] for b in one.val_dataloader()]
    again = [b["source"] for b in one.val_dataloader()]  # a second epoch sees the very same tiles
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    grid = _module(src, tgt, val_tiles=None)
    assert len(grid.datasets["val"]) == 16 * len(grid.samples["val"])


@pytest.mark.parametrize("size", [(300, 200), (180, 420), (256, 256)])
def test_regions_never_overlap_and_keep_the_gap(size):
    sample = Sample("f", Path("f.tif"))
    split = region_split([sample], [size], 0.15, 0.2, patch_size=32, gap=16)
    rects = {stage: _rects(split[stage])[0] for stage in ("train", "val", "test")}
    for (a_name, a), (b_name, b) in [(x, y) for x in rects.items() for y in rects.items() if x[0] < y[0]]:
        assert _distance(a, b) >= 16, (a_name, b_name, a, b)
    for top, left, h, w in rects.values():
        assert top >= 0 and left >= 0 and top + h <= size[0] and left + w <= size[1] and min(h, w) >= 32
    area = size[0] * size[1]
    assert rects["test"][2] * rects["test"][3] >= 0.2 * area - max(size)  # about its share of the field


def test_training_crops_stay_inside_the_training_region(tmp_path):
    dm = _module(*_fields(tmp_path, [(200, 160)]), split={"mode": "regions", "val_fraction": 0.2, "test_fraction": 0.2},
                 samples_per_epoch=64)
    (train_region,) = _rects(dm.samples["train"])
    others = _rects(dm.samples["val"]) + _rects(dm.samples["test"])
    torch.manual_seed(0)
    for k in range(64):
        item = dm.datasets["train"][k]
        crop = (train_region[0] + item["top"], train_region[1] + item["left"], 32, 32)
        assert all(_distance(crop, other) >= 16 for other in others)  # half a patch by default
        assert item["source"].shape == (1, 32, 32)


def test_a_given_test_split_alone_still_gets_a_validation_set(tmp_path):
    src, tgt = _fields(tmp_path / "train", [(64, 64)] * 4)
    test_src, test_tgt = _fields(tmp_path / "test", [(64, 64)])
    given = {"val_fraction": 0.25, "test": {"source_dir": str(test_src), "target_dir": str(test_tgt)}}
    dm = _module(src, tgt, split=given)
    assert len(dm.samples["val"]) == 1 and len(dm.samples["train"]) == 3
    assert not {s.name for s in dm.samples["val"]} & {s.name for s in dm.samples["train"]}
    # one training field: the validation split is carved as a region of it
    one_src, one_tgt = _fields(tmp_path / "one", [(160, 160)])
    dm = _module(one_src, one_tgt, split=given)
    assert dm.samples["val"][0].region is not None and dm.samples["train"][0].region is not None
    # too small to carve: the error says what to add
    small_src, small_tgt = _fields(tmp_path / "small", [(64, 64)])
    with pytest.raises(ValueError, match=r"data\.split\.val="):
        _module(small_src, small_tgt, split=given)


def test_kfold_over_images_partitions_the_data(tmp_path):
    src, tgt = _fields(tmp_path, [(64, 64)] * 7)
    folds = [_module(src, tgt, cv={"folds": 3, "fold": i}).samples for i in range(3)]
    tests = [{s.name for s in f["test"]} for f in folds]
    assert tests[0] == tests[1] == tests[2] and tests[0]
    vals = [{s.name for s in f["val"]} for f in folds]
    assert not (vals[0] & vals[1] or vals[0] & vals[2] or vals[1] & vals[2])
    every = {f"f{i}" for i in range(7)}
    assert set().union(*vals) == every - tests[0]
    for f, v in zip(folds, vals):
        assert {s.name for s in f["train"]} == every - tests[0] - v


def test_kfold_over_regions_of_one_field(tmp_path):
    sample = Sample("f", Path("f.tif"))
    strips = [region_folds(sample, (96, 400), 4, i, patch_size=32, gap=16) for i in range(4)]
    vals = [s["val"][0].region for s in strips]
    assert sum(r[3] for r in vals) == 400 and len({r[1] for r in vals}) == 4  # the strips tile the width
    for fold in strips:
        for piece in fold["train"]:
            assert _distance(piece.region, fold["val"][0].region) >= 16
    dm = _module(*_fields(tmp_path, [(128, 480)]), cv={"folds": 3, "fold": 1})
    assert dm.samples["test"][0].region and len(dm.samples["val"]) == 1 and dm.samples["train"]


@pytest.mark.parametrize(("options", "message"), [
    ({"cv": {"folds": 3, "fold": 3}}, r"cv\.fold=3: must be 0\.\.2"),
    ({"cv": {"folds": 9, "fold": 0}}, r"cv\.folds=9: only \d image"),
    ({"split": {"mode": "regions", "val_fraction": 0.4, "test_fraction": 0.4}}, r"leaves a training region"),
    ({"split": {"val_fraction": 0.5, "test_fraction": 0.5}}, r"cannot give .* and still train; use data\.split\.mode=regions"),
    ({"patch_size": 96}, r"smaller than data\.patch_size=96; lower data\.patch_size to at most 64"),
])
def test_impossible_splits_are_refused_with_the_setting_to_change(tmp_path, options, message):
    src, tgt = _fields(tmp_path, [(64, 64)] * 3)
    with pytest.raises((ValueError, ImageReadError), match=message):
        _module(src, tgt, **options)


def test_foreground_fraction_centres_crops_on_sparse_objects(tmp_path):
    src, tgt = _fields(tmp_path, [(256, 256)], sparse=True)
    split = {"val_fraction": 0, "test_fraction": 0}
    hits = {}
    for fraction in (0.0, 1.0):
        dm = _module(src, tgt, split=split, samples_per_epoch=60, foreground_fraction=fraction, patch_size=32)
        torch.manual_seed(0)
        hits[fraction] = sum(float(dm.datasets["train"][k]["target"].max()) > 0.5 for k in range(60))
    assert hits[1.0] == 60 and hits[0.0] < 20  # one 6x6 object in a 256^2 field


@pytest.mark.parametrize(("override", "message"), [
    ("data.patch_size=32", r"data\.patch_size=32 is not a multiple of 64.*backbone\.num_downs=6\).*backbone\.num_downs=5"),
    ("data.split.val_fraction=0", r"no validation images, but monitor=val/ssim"),
    ("cv.folds=3", r"cv\.folds=3: only 2 image"),
])
def test_bad_settings_stop_before_training_and_write_nothing(cfg_train, override, message):
    cfg = cfg_train("data.patch_size=64", "backbone.num_downs=6", override, "data.synthetic.n_images=3",
                    "data.split.test_fraction=0.34")
    with pytest.raises(ValueError, match=message):
        train(cfg)
    out = Path(cfg.paths.output_dir)
    assert not (out / "config_resolved.yaml").exists() and not (out / "checkpoints").exists()


def test_whole_fields_are_scored_every_n_epochs_and_at_the_end(cfg_train):
    cfg = cfg_train("trainer.max_epochs=3", "model.eval_every_n_epochs=2", "test=false", "logger=csv",
                    "data.patches_per_image=null", "data.samples_per_epoch=8")
    metrics = train(cfg)
    rows = _csv_rows(Path(cfg.paths.output_dir))
    field_epochs = sorted({int(r["epoch"]) for r in rows if r.get("val_field/ssim")})
    tile_epochs = sorted({int(r["epoch"]) for r in rows if r.get("val/ssim")})
    assert tile_epochs == [0, 1, 2] and field_epochs == [1, 2]  # every 2nd epoch and the last
    assert 0 <= metrics["val_field/nuclei_f1"] <= 1 and "val_field/nuclei_f1_best" in metrics
    summary = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    assert 0 < summary["validation_share"] < 1 and "optimiser steps per epoch" in summary["data"]


def test_a_run_stopped_before_a_field_epoch_is_scored_on_its_final_weights(cfg_train):
    cfg = cfg_train("trainer.max_epochs=5", "model.eval_every_n_epochs=4", "test=false", "logger=csv",
                    "data.patches_per_image=null", "data.samples_per_epoch=8",
                    "+trainer.max_steps=6")  # 1.5 epochs of 2 batches x (G + D) steps
    metrics = train(cfg)
    rows = _csv_rows(Path(cfg.paths.output_dir))
    assert sum(bool(r.get("val_field/ssim")) for r in rows) == 1  # not during the 2 epochs; once at the end
    assert "val_field/ssim" in metrics and "val_field/pearson" in metrics


def _csv_rows(run: Path) -> list[dict]:
    import csv

    (path,) = run.glob("csv/**/metrics.csv")
    return list(csv.DictReader(open(path)))


def test_a_cross_validation_multirun_writes_a_mean_and_sd_table(tmp_path, capsys):
    import os
    import subprocess
    import sys

    import pandas as pd

    from stainless.evaluation.compare import main as compare_main

    root = Path(__file__).resolve().parents[1]
    args = ["-m", "cv.folds=3", "cv.fold=0,1,2", "trainer.max_epochs=1", "trainer.limit_train_batches=1", "test=false",
            "data.synthetic.n_images=6", "data.synthetic.size=64", "data.patch_size=32", "backbone.num_downs=5",
            "backbone.ngf=8", "model.discriminator.ndf=8", "print_config=false", "callbacks.progress_bar.refresh_rate=0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root / "src")}
    done = subprocess.run([sys.executable, str(root / "train.py"), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "virtual_labeling" / "multiruns").iterdir()
    table = pd.read_csv(sweep / "cv_results.csv")
    assert len(table) == 1 and table["folds"].iloc[0] == 3
    finals = [json.loads((sweep / str(i) / "summary.json").read_text())["metrics"]["val/ssim"] for i in range(3)]
    assert table["final val/ssim mean"].iloc[0] == pytest.approx(np.mean(finals))
    assert table["final val/ssim sd"].iloc[0] == pytest.approx(np.std(finals, ddof=1))
    assert "mean +- sd over folds" in done.stdout
    # the validation fields of the three runs are three different folds
    vals = [json.loads((sweep / str(i) / "summary.json").read_text())["samples"]["val"] for i in range(3)]
    assert len({tuple(v) for v in vals}) == 3
    compare_main([str(sweep)])
    assert "Cross-validation, mean +- sd over folds" in capsys.readouterr().out


def test_discriminator_warmup_and_ssim_term(cfg_train):
    """During the warm-up batches the discriminator is not trained; afterwards it is; the SSIM term is logged."""
    from stainless.models.checkpoint import load_checkpoint

    cfg = cfg_train("trainer.max_epochs=1", "test=false", "data.patches_per_image=null", "data.samples_per_epoch=20",
                    "trainer.limit_train_batches=null",
                    "loss.adversarial_warmup=4", "loss.ssim_weight=1.0", "logger=csv", "trainer.log_every_n_steps=1")
    summary = train(cfg)
    rows = _csv_rows(Path(cfg.paths.output_dir))
    d_losses = [float(r["train/loss_d_step"]) for r in rows if r.get("train/loss_d_step")]
    assert len(d_losses) == 5 and d_losses[:4] == [0.0] * 4 and d_losses[4] > 0  # 4 warm-up batches, then D
    assert "train/loss_g_ssim" in summary
    # the generator stepped 5 times, the discriminator once
    assert load_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")["global_step"] == 6


def test_the_command_line_gives_one_line_and_exit_code_1_for_a_bad_setting(tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root / "src")}
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run([sys.executable, str(root / "train.py"), "data.patch_size=64", "data.synthetic.n_images=3",
                           "data.synthetic.size=64", "print_config=false", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "data.patch_size=64 is not a multiple of 128" in errors[0]
    assert "Traceback" not in done.stderr and "Traceback" in (tmp_path / "run" / "virtual_labeling.log").read_text()
    assert not (tmp_path / "run" / "config_resolved.yaml").exists()


def test_lr_schedule_warms_up_then_decays_to_its_final_factor(cfg_train):
    from stainless.models.checkpoint import load_checkpoint

    cfg = cfg_train("trainer.max_epochs=2", "test=false", "data.patches_per_image=null", "data.samples_per_epoch=16",
                    "trainer.limit_train_batches=null", "model.lr=1e-3", "model.lr_schedule={warmup_steps:2,final_factor:0.1}",
                    "logger=csv", "trainer.log_every_n_steps=1")
    train(cfg)
    rates = [float(r["train/lr_g"]) for r in _csv_rows(Path(cfg.paths.output_dir)) if r.get("train/lr_g")]
    assert len(rates) == 8  # 2 epochs of 4 batches
    assert rates[0] < rates[1] and rates[1] == max(rates)  # linear warm-up over 2 batches
    assert all(a >= b for a, b in zip(rates[1:], rates[2:]))  # then decaying
    assert rates[-1] == pytest.approx(1e-4)  # cosine down to 0.1 x 1e-3 at the last batch
    state = load_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")["optimizer_states"]
    assert all(g["lr"] == pytest.approx(1e-4) for opt in state for g in opt["param_groups"])
