"""Robustness: malformed inputs named before training, interrupted runs, unsafe files, secrets kept out."""

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from stainless.data.datamodule import MicroscopyDataModule
from stainless.evaluate import evaluate
from stainless.io import ImageReadError, image_shape, read_image
from stainless.models.checkpoint import AtomicCheckpointIO, CheckpointError, load_checkpoint
from stainless.train import train
from stainless.video import read_frames

ROOT = Path(__file__).resolve().parents[1]


def _pairs(root: Path, n: int = 4, size: int = 64) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("src", "tgt"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            tifffile.imwrite(root / sub / f"im{i}.tif", rng.integers(0, 4000, (size, size), dtype=np.uint16))
    return root


def _setup(root: Path, **options) -> MicroscopyDataModule:
    options = {"source_dir": str(root / "src"), "target_dir": str(root / "tgt"), "patch_size": 32,
               "split": {"val_fraction": 0.25, "test_fraction": 0.0}, **options}
    datamodule = MicroscopyDataModule(**options)
    datamodule.setup("fit")
    return datamodule


def _problem(root: Path, **options) -> str:
    with pytest.raises((ImageReadError, ValueError)) as error:
        _setup(root, **options)
    message = str(error.value)
    assert "\n" not in message
    return message


# -- bad input: one clear error, before training, naming the file and the problem ---------------------------


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "tgt").mkdir()
    assert _problem(tmp_path) == f"{tmp_path / 'src'}: no images (.tif, .tiff, .png, .jpg, .jpeg) in this folder"
    assert "folder does not exist" in _problem(tmp_path, source_dir=str(tmp_path / "nowhere"))


def test_zero_byte_image(tmp_path):
    _pairs(tmp_path)
    (tmp_path / "tgt" / "im2.tif").write_bytes(b"")
    assert _problem(tmp_path) .startswith(f"{tmp_path / 'tgt' / 'im2.tif'}: file is empty (0 bytes)")


def test_corrupt_image(tmp_path):
    _pairs(tmp_path)
    (tmp_path / "src" / "im1.tif").write_bytes(b"II*\x00 this is not a TIFF at all" * 3)
    message = _problem(tmp_path)
    assert message.startswith(f"{tmp_path / 'src' / 'im1.tif'}: cannot decode image")


def test_truncated_pixel_data_found_by_full_validation(tmp_path):
    _pairs(tmp_path)
    path = tmp_path / "src" / "im3.png"
    import imageio.v3 as iio

    (tmp_path / "src" / "im3.tif").unlink()
    iio.imwrite(path, np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact, pixel data cut
    message = _problem(tmp_path, validation="full")
    assert message.startswith(f"{path}: cannot decode image")


def test_unsupported_format(tmp_path):
    bmp = tmp_path / "a.bmp"
    bmp.write_bytes(b"BM" + bytes(100))
    with pytest.raises(ImageReadError, match=r"a\.bmp: unsupported format '\.bmp'"):
        image_shape(bmp)


def test_pair_of_different_sizes(tmp_path):
    _pairs(tmp_path)
    tifffile.imwrite(tmp_path / "tgt" / "im0.tif", np.zeros((48, 64), np.uint16))
    assert _problem(tmp_path).startswith(f"{tmp_path / 'tgt' / 'im0.tif'}: size (48, 64) differs from its input")


def test_source_without_target_and_the_reverse(tmp_path):
    _pairs(tmp_path)
    (tmp_path / "tgt" / "im3.tif").rename(tmp_path / "tgt" / "other.tif")
    message = _problem(tmp_path)
    assert message.startswith(f"{tmp_path / 'tgt'}: no target for source(s) im3")
    (tmp_path / "src" / "im3.tif").rename(tmp_path / "src" / "other.tif")
    (tmp_path / "tgt" / "extra.tif").write_bytes((tmp_path / "tgt" / "im0.tif").read_bytes())
    assert "no source for target(s) extra" in _problem(tmp_path)


def test_channel_index_out_of_range(tmp_path):
    (tmp_path / "files").mkdir()
    for i in range(4):
        tifffile.imwrite(tmp_path / "files" / f"f{i}.tif", np.zeros((2, 64, 64), np.uint16), metadata={"axes": "CYX"})
    message = _problem(tmp_path, source_dir=None, target_dir=None, files_dir=str(tmp_path / "files"),
                       source_channels=[0], target_channels=[5])
    assert re.match(rf"{tmp_path / 'files'}/f\d\.tif: channel index 5 out of range; the image has 2 channel\(s\)", message)


def test_mask_values_outside_the_classes(tmp_path):
    _pairs(tmp_path)
    for i in range(4):
        mask = np.zeros((64, 64), np.uint8)
        mask[10:20, 10:20] = 3 if i == 2 else 1
        tifffile.imwrite(tmp_path / "tgt" / f"im{i}.tif", mask)
    message = _problem(tmp_path, target_type="mask", mask_mode="classes", mask_classes=3)
    assert message.startswith(f"{tmp_path / 'tgt' / 'im2.tif'}: mask value 3 is outside the configured classes 0..2")
    _setup(tmp_path, target_type="mask", mask_mode="classes", mask_classes=4)  # four classes: fine


def test_nan_and_inf_pixels(tmp_path):
    _pairs(tmp_path)
    image = np.ones((64, 64), np.float32)
    image[5, 5] = np.inf
    tifffile.imwrite(tmp_path / "src" / "im1.tif", image)
    assert _problem(tmp_path) .startswith(f"{tmp_path / 'src' / 'im1.tif'}: image contains NaN or Inf pixels")


def test_image_smaller_than_the_patch(tmp_path):
    _pairs(tmp_path, size=64)
    for sub in ("src", "tgt"):
        tifffile.imwrite(tmp_path / sub / "im0.tif", np.zeros((24, 64), np.uint16))
    message = _problem(tmp_path)
    assert message.startswith(f"{tmp_path / 'src' / 'im0.tif'}: image of 24x64 pixels is smaller than data.patch_size=32")


def _labelme(folder: Path, name: str, shapes, image_path="img.png", raw=None):
    folder.mkdir(parents=True, exist_ok=True)
    import imageio.v3 as iio

    if not (folder / "img.png").exists():
        iio.imwrite(folder / "img.png", np.full((64, 64), 128, np.uint8))
    text = raw if raw is not None else json.dumps(
        {"shapes": shapes, "imagePath": image_path, "imageData": None, "imageHeight": 64, "imageWidth": 64})
    (folder / f"{name}.json").write_text(text)


GOOD_SHAPE = [{"label": "cell", "points": [[5, 5], [30, 5], [30, 30]], "shape_type": "polygon"}]


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"raw": "{not json"}, "not a valid LabelMe JSON file"),
        ({"shapes": [{"label": "c", "points": [[1, 1], [9, 9]], "shape_type": "hexagon"}]}, "hexagon"),
        ({"shapes": [{"label": "c", "points": [[1, 1], [9, 9]], "shape_type": "polygon"}]}, "at least three points"),
        ({"shapes": GOOD_SHAPE, "image_path": "../../etc/passwd.png"}, "outside"),
        ({"shapes": GOOD_SHAPE, "image_path": "missing.png"}, "missing.png"),
    ],
)
def test_bad_labelme_files_are_named_before_training(tmp_path, kwargs, reason):
    folder = tmp_path / "labelme"
    for i in range(3):
        _labelme(folder, f"good{i}", GOOD_SHAPE)
    _labelme(folder, "bad", **{"shapes": None, **kwargs})
    options = {"source_dir": None, "target_dir": None, "labelme_dir": str(folder), "target_type": "mask"}
    message = _problem(tmp_path, **options)
    assert str(folder / "bad.json") in message and reason.lower() in message.lower()
    # skip: the bad file is left out with a warning, the good ones train
    with pytest.warns(UserWarning, match="skipped 1 of 4 samples"):
        datamodule = _setup(tmp_path, on_error="skip", **options)
    assert sorted(s.name for stage in datamodule.samples.values() for s in stage) == ["good0", "good1", "good2"]


def test_skip_bad_samples_with_a_warning_and_a_count(tmp_path):
    _pairs(tmp_path, n=6)
    (tmp_path / "src" / "im4.tif").write_bytes(b"")
    with pytest.warns(UserWarning) as warnings:
        datamodule = _setup(tmp_path, on_error="skip")
    messages = [str(w.message) for w in warnings]
    assert any("im4" in m and "empty" in m for m in messages) and any("skipped 1 of 6 samples" in m for m in messages)
    assert "im4" not in {s.name for stage in datamodule.samples.values() for s in stage}
    assert sum(len(v) for v in datamodule.samples.values()) == 5


def test_unreadable_video(tmp_path):
    video = tmp_path / "cells.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42 garbage" * 4)
    with pytest.raises(ImageReadError, match=r"cells\.mp4: cannot read video"):
        read_frames(video)


def test_config_value_of_the_wrong_type(cfg_train):
    with pytest.raises(TypeError, match=r"^data\.batch_size='eight': expected an integer"):
        train(cfg_train("data.batch_size=eight"))
    with pytest.raises(TypeError, match=r"^model\.lr='fast': expected a number"):
        train(cfg_train("model.lr=fast"))


# -- runs survive interruption ------------------------------------------------------------------------------


def _train_process(log: Path, data_dir: Path, *overrides: str) -> subprocess.Popen:
    args = [sys.executable, "train.py", f"paths.data_dir={data_dir}", "data.patch_size=32", "data.num_workers=0",
            "data.synthetic.n_images=6", "data.synthetic.size=64", "backbone.num_downs=5", "backbone.ngf=8",
            "model.discriminator.ndf=8", "print_config=false", "test=false", "trainer.num_sanity_val_steps=0",
            "logger=csv", "callbacks.progress_bar.refresh_rate=1", *overrides]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _wait_for(condition, process, timeout=180.0):
    end = time.time() + timeout
    while time.time() < end:
        if condition():
            return
        assert process.poll() is None, "training ended early"
        time.sleep(0.2)
    process.kill()
    raise AssertionError("timed out")


def test_sigkill_leaves_a_loadable_last_checkpoint_and_ckpt_path_last_resumes(tmp_path):
    outputs = tmp_path / "outputs"
    runs = outputs / "virtual_labeling" / "runs"

    def last_checkpoints():
        return list(runs.glob("*/checkpoints/last.ckpt"))

    process = _train_process(tmp_path / "killed.log", tmp_path / "data", f"paths.log_dir={outputs}",
                             "trainer.max_epochs=100", "data.patches_per_image=16")
    _wait_for(lambda: last_checkpoints() and load_checkpoint(last_checkpoints()[0])["epoch"] >= 1, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    (last,) = last_checkpoints()
    checkpoint = load_checkpoint(last)  # loadable: never half-written
    epoch = checkpoint["epoch"]

    # a new run directory of the same task; ckpt_path=last finds the killed run's last.ckpt
    process = _train_process(tmp_path / "resumed.log", tmp_path / "data", f"paths.log_dir={outputs}",
                             "ckpt_path=last", f"trainer.max_epochs={epoch + 2}", "data.patches_per_image=16")
    assert process.wait(timeout=240) == 0, (tmp_path / "resumed.log").read_text()[-2000:]
    (resumed,) = [p.parent.parent for p in last_checkpoints() if p != last]
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["epochs"] == epoch + 2
    assert load_checkpoint(resumed / "checkpoints" / "last.ckpt")["global_step"] > checkpoint["global_step"]
    assert f"ckpt_path=last: resuming {last}" in (tmp_path / "resumed.log").read_text()


def test_sigterm_saves_a_checkpoint_before_exiting(tmp_path):
    run = tmp_path / "runs" / "slurm"
    log = tmp_path / "slurm.log"
    # one long epoch: no end-of-epoch checkpoint exists when the signal comes
    process = _train_process(log, tmp_path / "data", f"hydra.run.dir={run}", "trainer.max_epochs=1", "data.patches_per_image=400",
                             "trainer.limit_train_batches=500")
    _wait_for(lambda: log.is_file() and "Epoch 0:   1%" in log.read_text(), process)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(last)
    assert checkpoint["epoch"] == 0 and 0 < checkpoint["global_step"] < 500
    assert "SIGTERM: saved" in log.read_text()


def test_atomic_save_keeps_the_previous_checkpoint_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    def dies_mid_write(obj, file):
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the process is stopped while writing

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


@pytest.mark.parametrize("experiment", ["virtual_labeling", "rbc_segmentation"])
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(cfg_train, monkeypatch, experiment):
    cfg = cfg_train(f"experiment={experiment}", "trainer.max_epochs=3", "test=false", "data.synthetic.n_frames=8",
                    "data.synthetic.n_labelme=6") if experiment == "rbc_segmentation" else cfg_train(
        "trainer.max_epochs=3", "test=false")
    from stainless.models.pix2pix_module import Pix2PixModule
    from stainless.models.segmentation_module import SegmentationModule

    cls = Pix2PixModule if experiment == "virtual_labeling" else SegmentationModule
    original = cls.training_step

    def poisoned(self, batch, batch_idx):
        if self.current_epoch == 1:  # one good epoch first, then the loss turns NaN
            batch = {**batch, "source": batch["source"] * float("nan")}
        return original(self, batch, batch_idx)

    monkeypatch.setattr(cls, "training_step", poisoned)
    with pytest.raises(FloatingPointError, match=r"became nan at epoch 1, step \d+"):
        train(cfg)
    last = load_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_no_run_writes_into_another_runs_directory(cfg_train, cfg_eval):
    cfg = cfg_train("test=false")
    train(cfg)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    ecfg = cfg_eval(f"ckpt_path={ckpt}", "uncertainty.method=none")
    evaluate(ecfg)
    summary = Path(ecfg.paths.output_dir) / "summary.json"
    before = summary.read_bytes()
    with pytest.raises(FileExistsError, match="already holds a run"):
        evaluate(ecfg)
    assert summary.read_bytes() == before


# -- files from elsewhere -----------------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def test_malicious_checkpoint_is_refused_everywhere(tmp_path, cfg_train, cfg_eval):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "stainless": {"module": "stainless.models.pix2pix_module.Pix2PixModule"},
                "payload": _Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: not a loadable weights-only checkpoint"):
        evaluate(cfg_eval(f"ckpt_path={evil}"))
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: not a loadable weights-only checkpoint"):
        train(cfg_train(f"ckpt_path={evil}", run="resume"))
    with pytest.raises(CheckpointError, match=r"evil\.ckpt"):
        train(cfg_train(f"model.init_from={evil}", run="init"))
    assert not marker.exists()
    # the documented escape hatch really unpickles (and so runs the payload)
    load_checkpoint(evil, trusted=True)
    assert marker.read_text() == "code ran"


def _png_header_only(path: Path, width: int, height: int) -> None:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_decompression_bombs_are_refused_from_the_header(tmp_path):
    png = tmp_path / "bomb.png"
    _png_header_only(png, 40_000, 40_000)  # 1.6 gigapixels claimed by a file of a few dozen bytes
    with pytest.raises(ImageReadError, match=r"bomb\.png: image .*too large to read safely"):
        read_image(png)
    tif = tmp_path / "bomb.tif"
    tifffile.imwrite(tif, np.zeros((8, 8), np.uint8))
    with tifffile.TiffFile(tif, mode="r+b") as handle:
        handle.pages[0].tags["ImageWidth"].overwrite(60_000)
        handle.pages[0].tags["ImageLength"].overwrite(60_000)
    with pytest.raises(ImageReadError, match=r"bomb\.tif: image of shape \(60000, 60000\) is too large to read safely"):
        read_image(tif)


def test_secrets_never_reach_saved_files(tmp_path):
    env_secret, cli_secret = "wandb-key-0123456789abcdef", "cli-token-zyxwvu987"
    run = tmp_path / "runs" / "secret"
    args = [sys.executable, "train.py", f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}",
            "data.patch_size=32", "data.synthetic.n_images=6", "data.synthetic.size=64", "backbone.num_downs=5",
            "backbone.ngf=8", "model.discriminator.ndf=8", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1", "test=false", "logger=many_loggers", "logger.wandb.offline=true",
            f"+notes.api_key={cli_secret}", "+notes.copied=${oc.env:WANDB_API_KEY}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_API_KEY": env_secret, "WANDB_MODE": "offline"}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert env_secret not in result.stdout + result.stderr and cli_secret not in result.stdout + result.stderr
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.name == "config_resolved.yaml" for p in files) and any(".hydra" in p.parts for p in files)
    assert any("wandb" in p.parts for p in files)
    for path in files:
        data = path.read_bytes()
        assert env_secret.encode() not in data and cli_secret.encode() not in data, path
    assert "***" in (run / "config_resolved.yaml").read_text()
