"""End to end on tiny synthetic data: train -> checkpoint -> evaluate, resume, fine-tune, loggers."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from stainless.evaluate import evaluate
from stainless.models.checkpoint import CheckpointError, load_checkpoint, module_from_checkpoint
from stainless.train import train


def test_train_then_evaluate_round_trip(cfg_train, cfg_eval, tmp_path):
    cfg = cfg_train("trainer.max_epochs=2")
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    summary = json.loads((run / "summary.json").read_text())
    assert Path(summary["best_model_path"]).is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert summary["metrics"]["val/ssim"] == pytest.approx(metrics["val/ssim"])
    assert {"test_patches/ssim", "test_patches/psnr", "test_patches/mse", "test_patches/mae", "test_patches/pearson"} <= set(metrics)
    assert not any(k.startswith("test/") for k in metrics)  # crops are named for what they are
    assert (run / "config_resolved.yaml").is_file() and list((run / "images").glob("epoch_*.png"))
    assert (run / "csv" / "metrics.csv").is_file()

    # the checkpoint alone rebuilds the model and its data settings
    module, ckpt = module_from_checkpoint(summary["best_model_path"])
    assert ckpt["datamodule_hyper_parameters"]["patch_size"] == 32
    ecfg = cfg_eval(f"ckpt_path={summary['best_model_path']}", "report=markdown")
    result = evaluate(ecfg)
    out = Path(ecfg.paths.output_dir)
    test_names = summary["samples"]["test"]
    assert sorted(p.stem for p in (out / "predictions").glob("*.tif")) == sorted(test_names)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert {r["method"] for r in rows} == {"model", "baseline_input", "baseline_mean"}
    assert len([r for r in rows if r["method"] == "model"]) == len(test_names)
    assert result["metrics"]["model"]["ssim"]["n"] == len(test_names)
    assert (out / "report.md").read_text().count("![") == len(test_names)
    assert {p.name for p in (out / "maps").glob(f"{test_names[0]}_*")} >= {
        f"{test_names[0]}_abs_error.tif", f"{test_names[0]}_ssim.tif", f"{test_names[0]}_abs_error.png"}
    pred = tifffile.imread(out / "predictions" / f"{test_names[0]}.tif")
    assert pred.dtype == np.float32 and pred.shape == (64, 64)

    # evaluation of the same test images reproduces the per-image model metric from the module itself
    from stainless.data.datamodule import MicroscopyDataModule
    from stainless.data.datasets import load_sample
    from stainless.metrics.image import per_image_metrics

    dm = MicroscopyDataModule(**ckpt["datamodule_hyper_parameters"])
    sample = [s for s in dm.find_samples()["test"] if s.name == test_names[0]][0]
    loaded = load_sample(sample, ckpt["datamodule_hyper_parameters"]["normalization"])
    with torch.no_grad():
        direct = module(torch.from_numpy(loaded.source)[None]).clamp(0, 1)
    expected = per_image_metrics(direct, torch.from_numpy(loaded.target)[None])[0]["mse"]
    row = [r for r in rows if r["method"] == "model" and r["image"] == test_names[0]][0]
    assert float(row["mse"]) == pytest.approx(expected, rel=1e-4)


def test_evaluate_new_input_folder_without_targets(cfg_train, cfg_eval, tmp_path):
    cfg = cfg_train()
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    new = tmp_path / "new"
    new.mkdir()
    big = (np.random.default_rng(0).random((150, 90)) * 65535).astype(np.uint16)  # not a tile multiple
    tifffile.imwrite(new / "big.tif", big)
    ecfg = cfg_eval(f"ckpt_path={ckpt}", f"input={new}", "output_dtype=input")
    evaluate(ecfg)
    out = Path(ecfg.paths.output_dir)
    pred = tifffile.imread(out / "predictions" / "big.tif")
    assert pred.dtype == np.uint16 and pred.shape == (150, 90)
    assert (out / "report.html").is_file()
    # a second evaluation gets its own directory; the first is untouched
    again = cfg_eval(f"ckpt_path={ckpt}", f"input={new}", run="eval2")
    evaluate(again)
    assert (out / "predictions" / "big.tif").is_file() and Path(again.paths.output_dir) != out


def test_resume_continues_from_last_checkpoint(cfg_train):
    first = cfg_train("trainer.max_epochs=1", run="first")
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["epoch"] == 0
    resumed = cfg_train("trainer.max_epochs=2", f"ckpt_path={last}", run="resumed")
    train(resumed)
    summary = json.loads((Path(resumed.paths.output_dir) / "summary.json").read_text())
    assert summary["epochs"] == 2
    assert load_checkpoint(Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt")["epoch"] == 1
    # the resumed run started from the first run's step count, not from zero
    assert summary["global_step"] == 2 * load_checkpoint(last)["global_step"]


def test_init_from_copies_matching_weights_and_reports_the_rest(cfg_train):
    source = cfg_train(run="source")
    train(source)
    ckpt = Path(source.paths.output_dir) / "checkpoints" / "last.ckpt"
    # a deeper discriminator: its extra/reshaped layers cannot match
    tuned = cfg_train(f"model.init_from={ckpt}", "model.discriminator.n_layers=3", "trainer.max_epochs=1",
                      "trainer.limit_train_batches=1", run="tuned")
    train(tuned)
    report = json.loads((Path(tuned.paths.output_dir) / "summary.json").read_text())["init_from"]
    generator_keys = [k for k in load_checkpoint(ckpt)["state_dict"] if k.startswith("generator.")]
    assert report["loaded"] >= len(generator_keys)
    assert report["missing"] or report["shape_mismatch"]
    assert all(k.startswith("discriminator.") for k in report["missing"] + report["shape_mismatch"])


def test_init_from_really_sets_the_weights(cfg_train):
    from stainless.models.checkpoint import init_weights_from
    from stainless.models.pix2pix_module import Pix2PixModule

    source = cfg_train(run="source")
    train(source)
    ckpt = Path(source.paths.output_dir) / "checkpoints" / "last.ckpt"
    module, _ = module_from_checkpoint(ckpt)
    fresh = Pix2PixModule(**load_checkpoint(ckpt)["hyper_parameters"])
    assert not torch.equal(fresh.generator.downs[0][0].weight, module.generator.downs[0][0].weight)
    init_weights_from(fresh, ckpt)
    assert torch.equal(fresh.generator.downs[0][0].weight, module.generator.downs[0][0].weight)


def test_loggers_write_their_files(cfg_train):
    cfg = cfg_train("logger=many_loggers")
    train(cfg)
    run = Path(cfg.paths.output_dir)
    assert (run / "csv" / "metrics.csv").is_file()
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    offline = list((run / "wandb").glob("offline-run-*"))
    assert offline, "W&B should have logged offline without an API key"
    assert list(offline[0].glob("run-*.wandb"))
    assert list(offline[0].rglob("*.png"))  # the picture grid went to W&B as an image


def test_unsafe_or_foreign_checkpoints_are_refused(tmp_path):
    evil = tmp_path / "evil.ckpt"

    class Boom:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"state_dict": {}, "payload": Boom()}, evil)
    with pytest.raises(CheckpointError, match="evil.ckpt: not a loadable weights-only checkpoint"):
        load_checkpoint(evil)
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(CheckpointError, match="plain.ckpt: not a stainless checkpoint"):
        module_from_checkpoint(plain)


def test_lr_schedule_is_stepped_each_epoch(cfg_train):
    cfg = cfg_train(
        "trainer.max_epochs=2", "model.lr=1e-3", "model.lr_schedule=null",
        "model.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:1,gamma:0.5}",
    )
    train(cfg)
    ckpt = load_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    lrs = [group["lr"] for state in ckpt["optimizer_states"] for group in state["param_groups"]]
    assert lrs == pytest.approx([1e-3 * 0.25, 1e-3 * 0.25])  # generator and discriminator, halved twice
    with pytest.raises(ValueError, match="model.scheduler and model.lr_schedule"):  # one schedule at a time
        train(cfg_train("model.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:1}",
                        run="both"))


def test_tensorboard_receives_the_picture_grid(cfg_train):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = cfg_train("logger=tensorboard")
    train(cfg)
    images, scalars = set(), set()
    for events in (Path(cfg.paths.output_dir) / "tensorboard").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        images |= set(acc.Tags()["images"])
        scalars |= set(acc.Tags()["scalars"])
    assert "val/visuals" in images and "val/ssim" in scalars


def test_given_validation_and_test_folders_are_used(cfg_train, tmp_path):
    from stainless.data.synthetic import generate_nuclei_dataset

    train_root = generate_nuclei_dataset(tmp_path / "tr", n_images=3, size=64, seed=1)
    val_root = generate_nuclei_dataset(tmp_path / "va", n_images=2, size=64, seed=2)
    cfg = cfg_train(
        "data=paired_folders", f"data.source_dir={train_root / 'membrane'}", f"data.target_dir={train_root / 'nuclei'}",
        f"data.split.val={{source_dir:{val_root / 'membrane'},target_dir:{val_root / 'nuclei'}}}",
        f"data.split.test={{source_dir:{val_root / 'membrane'},target_dir:{val_root / 'nuclei'}}}",
    )
    train(cfg)
    summary = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    assert len(summary["samples"]["train"]) == 3 and len(summary["samples"]["val"]) == 2
    assert "test_patches/ssim" in summary["metrics"]
