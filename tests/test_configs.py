"""Every option of every config group composes and instantiates; the entry points run."""

import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch
from hydra.utils import instantiate

from stainless.data.datasets import PairedImageDataset
from stainless.data.samples import paired_folder_samples
from stainless.data.synthetic import generate_nuclei_dataset
from stainless.data.synthetic_rbc import generate_rbc_dataset
from stainless.models.components.generators import build_generator
from stainless.train import build
from stainless.utils.logging import build_callbacks, build_loggers
from stainless.utils.pretrained import PretrainedWeightsMissing

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("backbone", options("backbone"))
def test_every_backbone_builds_a_generator(cfg_train, backbone):
    cfg = cfg_train(f"backbone={backbone}", *([] if backbone.startswith("pix2pix_unet") else ["backbone.encoder_weights=null"]))
    net = build_generator(dict(cfg.backbone), 1, 1).eval()
    size = 128 if "inception" in backbone else 64
    assert net(torch.rand(1, 1, size, size)).shape == (1, 1, size, size)


@pytest.mark.parametrize("augmentation", options("augmentation"))
def test_every_augmentation_applies(cfg_train, tmp_path, augmentation):
    cfg = cfg_train(f"augmentation={augmentation}")
    root = generate_nuclei_dataset(tmp_path / "aug", n_images=1, size=64)
    samples = paired_folder_samples(root / "membrane", root / "nuclei", root / "labels")
    dataset = PairedImageDataset(samples, dict(cfg.data.normalization), 32, True, 4,
                                 cfg.augmentation.geometric, cfg.augmentation.intensity)
    item = dataset[0]
    assert item["source"].shape == item["target"].shape == (1, 32, 32)
    assert len(dataset.geometric.transforms) == len(cfg.augmentation.geometric)


SEGMENTATION_LOSSES = {"bce_jaccard", "dice", "focal_dice"}


@pytest.mark.parametrize("loss", options("loss"))
def test_every_loss_builds_the_module(cfg_train, tmp_path, loss, monkeypatch):
    segmentation = loss in SEGMENTATION_LOSSES
    cfg = cfg_train(*(["experiment=rbc_segmentation"] if segmentation else []), f"loss={loss}")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    model_cfg = dict(cfg.model)
    model_cfg.pop("init_from")
    if segmentation:
        model_cfg["loss"] = {**cfg.loss, "pos_weight": 2.0} if cfg.loss.get("pos_weight") == "auto" else cfg.loss
        module = build(model_cfg, in_channels=1, out_channels=1)
        assert module.criterion.name == loss
        return
    if cfg.loss.perceptual_weight:
        with pytest.raises(PretrainedWeightsMissing, match="perceptual_weight"):
            build(model_cfg, in_channels=1, out_channels=1)
        import torchvision

        trunk = tmp_path / "alex.pth"
        torch.save(torchvision.models.alexnet().state_dict(), trunk)
        model_cfg["metrics"] = {**cfg.model.metrics, "lpips_trunk": str(trunk)}
    module = build(model_cfg, in_channels=1, out_channels=1)
    assert module.hparams.loss["perceptual_weight"] == cfg.loss.perceptual_weight


@pytest.mark.parametrize("logger", options("logger"))
def test_every_logger_instantiates(cfg_train, logger):
    cfg = cfg_train(f"logger={logger}")
    loggers = build_loggers(cfg.get("logger"))
    expected = {"none": 0, "many_loggers": 3}.get(logger, 1)
    assert len(loggers) == expected
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            assert lg._offline  # no API key in tests


@pytest.mark.parametrize("callbacks", options("callbacks"))
def test_every_callbacks_option_instantiates(cfg_train, callbacks):
    cfg = cfg_train(f"callbacks={callbacks}")
    built = build_callbacks(cfg.get("callbacks"))
    names = {type(c).__name__ for c in built}
    if "ModelCheckpoint" in names:  # the best by the monitored metric, and last.ckpt every epoch
        assert {c.monitor for c in built if type(c).__name__ == "ModelCheckpoint"} == {cfg.monitor, None}
    expected = {
        "default": {"ModelCheckpoint", "CheckpointOnSigterm", "RNGState", "EarlyStopping", "ImageLogger",
                    "TQDMProgressBar"},
        "none": set(),
        "model_checkpoint": {"ModelCheckpoint", "CheckpointOnSigterm", "RNGState"},
        "early_stopping": {"EarlyStopping"},
        "image_logger": {"ImageLogger"},
        "progress_bar": {"TQDMProgressBar"},
    }[callbacks]
    assert names == expected


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_option(cfg_train, trainer):
    cfg = cfg_train(f"trainer={trainer}")
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        # composes; instantiating needs a GPU: check the same option on CPU instead
        cfg.trainer.accelerator, cfg.trainer.devices = "cpu", 1
        if "sync_batchnorm" in cfg.trainer:
            cfg.trainer.sync_batchnorm = False
    assert instantiate(cfg.trainer, logger=False).max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("debug", options("debug"))
def test_every_debug_option(cfg_train, debug):
    cfg = cfg_train(f"debug={debug}")
    trainer = instantiate(cfg.trainer, logger=False)
    assert cfg.data.num_workers == 0 and trainer.max_epochs >= 1
    if debug == "fdr":
        assert trainer.fast_dev_run


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(cfg_train, tmp_path, experiment):
    cfg = cfg_train(f"experiment={experiment}")
    kind = "Pix2PixModule" if experiment.startswith("virtual_labeling") else "SegmentationModule"
    assert cfg.task_name == experiment and cfg.model._target_.endswith(kind)
    if experiment == "rbc_keras_parity":
        from conftest import compose_config

        cfg = compose_config("train", ["experiment=rbc_keras_parity"], tmp_path)  # without the test shrinking
        assert (cfg.backbone.encoder_name, cfg.model.lr, cfg.data.batch_size, cfg.data.patch_size) == ("vgg16", 1e-4, 8, 128)
        assert (cfg.data.split.mode, cfg.data.split.val_fraction, cfg.loss.bce_weight, cfg.loss.jaccard_weight) == (
            "last", 0.1, 1.0, 1.0)


def test_command_line_group_choice_beats_the_experiment(cfg_train):
    cfg = cfg_train("experiment=virtual_labeling", "backbone=resnet18")
    assert cfg.backbone.name == "resnet18" and cfg.model.generator.name == "resnet18"


@pytest.mark.parametrize("data", options("data"))
def test_every_data_option_serves_batches(cfg_train, tmp_path, data):
    root = generate_nuclei_dataset(tmp_path / "data" / "synthetic_nuclei", n_images=6, size=64)
    extra = []
    if data == "paired_folders":
        extra = [f"data.source_dir={root / 'membrane'}", f"data.target_dir={root / 'nuclei'}"]
    elif data == "multichannel":
        (tmp_path / "stacks").mkdir()
        for i in range(6):
            a = tifffile.imread(root / "membrane" / f"img_{i:03d}.tif")
            b = tifffile.imread(root / "nuclei" / f"img_{i:03d}.tif")
            tifffile.imwrite(tmp_path / "stacks" / f"f{i}.tif", np.stack([a, a // 2, b]))
        extra = [f"data.files_dir={tmp_path / 'stacks'}", "data.source_channels=[0,1]", "data.target_channels=[2]"]
    elif data in ("synthetic_rbc", "labelme", "masks"):
        rbc = generate_rbc_dataset(tmp_path / "data" / "synthetic_rbc", n_frames=6, n_labelme=6, size=64,
                                   cells_per_frame=3, video_frames=2, video_cells=2)
        extra = {"synthetic_rbc": ["data.synthetic=null"], "labelme": [f"data.labelme_dir={rbc / 'labelme'}"],
                 "masks": [f"data.source_dir={rbc / 'images'}", f"data.target_dir={rbc / 'masks'}"]}[data]
        extra += ["data.patch_size=32"]
    elif data == "oxford_pet":
        pet = tmp_path / "data" / "oxford-iiit-pet"
        (pet / "images").mkdir(parents=True)
        (pet / "annotations" / "trimaps").mkdir(parents=True)
        for i in range(5):
            iio.imwrite(pet / "images" / f"dog_{i}.jpg", np.full((40, 40, 3), 30 * i, np.uint8))
            iio.imwrite(pet / "annotations" / "trimaps" / f"dog_{i}.png", np.full((40, 40), 1 + i % 3, np.uint8))
        extra = ["data.patch_size=32"]
    cfg = cfg_train(f"data={data}", *extra)
    dm = build(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["source"].shape[1] == {"multichannel": 2, "oxford_pet": 3}.get(data, 1)
    if cfg.data.target_type == "mask":
        assert batch["target"].dtype == torch.int64 and set(batch["target"].unique().tolist()) <= {0, 1}
    else:
        assert batch["target"].shape[1] == 1


def _run(script, *args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_train_py_entry_point_gives_each_run_its_own_directory(tmp_path):
    args = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.max_epochs=1", "test=false", "data.synthetic.n_images=5", "data.synthetic.size=64",
            "data.patch_size=32", "backbone.num_downs=5", "backbone.ngf=8", "model.discriminator.ndf=8",
            "print_config=false"]
    for _ in range(2):
        done = _run("train.py", *args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    runs = sorted((tmp_path / "outputs" / "virtual_labeling" / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        assert (run / "summary.json").is_file() and (run / ".hydra" / "config.yaml").is_file()
        assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "data" / "synthetic_nuclei" / "dataset.json").is_file()


def test_typo_in_a_config_key_fails_before_training(tmp_path):
    done = _run("train.py", "trainer.max_epoch=3", cwd=tmp_path)
    assert done.returncode != 0
    assert "max_epoch" in done.stderr
    assert not (tmp_path / "data").exists()  # nothing was generated
