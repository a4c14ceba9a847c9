"""Models that leave the project: bioimage.io packages checked by bioimageio.core, ONNX and TorchScript parity,
fine-tuning from a package, and physical pixel sizes read from OME / ImageJ TIFFs into the tables."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import run_config_factory, tiny_train_config
from lightning.pytorch.utilities.parsing import AttributeDict

from stainless.export import export
from stainless.export.formats import ExportError, check_parity, onnx_runner, torchscript_runner
from stainless.io import ImageReadError, pixel_size, write_tiff
from stainless.models.checkpoint import CheckpointError, init_weights_from, module_from_checkpoint
from stainless.train import train

SEGMENTER = ["experiment=rbc_segmentation", "backbone.encoder_weights=null", "data.synthetic.n_frames=6",
             "data.synthetic.n_labelme=4", "data.synthetic.size=64", "+data.synthetic.video_frames=6",
             "+data.synthetic.video_cells=2", "+data.synthetic.cells_per_frame=3", "data.patch_size=64",
             "data.batch_size=2"]


def _train(root: Path, *overrides: str) -> Path:
    cfg = tiny_train_config(root, "test=false", *overrides)
    train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One tiny trained model of each job (trained once for this file)."""
    root = tmp_path_factory.mktemp("export_models")
    return {"virtual_labeling": _train(root / "vl"), "segmentation": _train(root / "seg", *SEGMENTER)}


@pytest.fixture
def export_cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOIMAGEIO_CACHE_PATH", str(tmp_path / "bioimageio_cache"))
    return run_config_factory("export", tmp_path, "export")


def _rdf(package: Path) -> dict:
    import yaml

    with zipfile.ZipFile(package) as archive:
        return yaml.safe_load(archive.read("rdf.yaml")), set(archive.namelist())


@pytest.mark.parametrize("job", ["segmentation", "virtual_labeling"])
def test_bioimageio_package_passes_test_model_offline(checkpoints, export_cfg, job):
    summary = export(export_cfg(f"ckpt_path={checkpoints[job]}", "format=bioimageio", "bioimageio.onnx=true"))
    package = Path(summary["output"])
    assert summary["test_model"]["status"] == "passed", summary["test_model"]["failures"]
    rdf, files = _rdf(package)
    assert {"weights.pt", "weights_torchscript.pt", "weights.onnx", "test_input.npy", "test_output.npy", "cover.png",
            "README.md", "training_config.yaml"} <= files
    assert rdf["format_version"].startswith("0.5") and rdf["config"]["stainless"]["job"] == job
    assert "# Validation" in zipfile.ZipFile(package).read("README.md").decode()
    steps = [step["id"] for step in rdf["inputs"][0]["preprocessing"]]
    mode = rdf["config"]["stainless"]["normalization"]["mode"]  # the training normalisation, as pre-processing
    assert ("scale_range" if mode == "percentile" else "scale_linear") in steps and "clip" in steps
    post = [step["id"] for step in rdf["outputs"][0].get("postprocessing", [])]
    assert ("sigmoid" in post and "binarize" in post) if job == "segmentation" else "sigmoid" not in post
    assert max(max(d.values()) for d in summary["max_abs_difference"].values()) <= 1e-4
    with zipfile.ZipFile(package) as archive:  # the test input is a real training image, raw, not noise
        test_input = np.load(archive.open("test_input.npy"))
    assert test_input.max() > 1.5  # raw 8-bit values: the package normalises them itself


def test_test_model_catches_a_package_whose_preprocessing_differs_from_training(checkpoints, export_cfg, monkeypatch):
    """Planted bug: the package describes percentiles 10..90 while training used 1..99.8. The test output (computed
    with the training normalisation) cannot be reproduced, so bioimageio.core must fail the package."""
    import stainless.export.bioimageio as bio

    real = bio.preprocessing
    monkeypatch.setattr(bio, "preprocessing", lambda normalization: real({**normalization, "low": 10.0, "high": 90.0}))
    cfg = export_cfg(f"ckpt_path={checkpoints['virtual_labeling']}", "format=bioimageio")
    with pytest.raises(ExportError, match="test_model failed"):
        export(cfg)
    out = Path(cfg.paths.output_dir)
    assert list(out.glob("*.zip.failed")) and not list(out.glob("*.zip"))  # kept for inspection, not as a package


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("job", ["segmentation", "virtual_labeling"])
def test_onnx_and_torchscript_match_pytorch_with_dynamic_sizes(checkpoints, export_cfg, fmt, job):
    summary = export(export_cfg(f"ckpt_path={checkpoints[job]}", f"format={fmt}"))
    path = Path(summary["output"])
    assert path.is_file() and json.loads(path.with_suffix(path.suffix + ".json").read_text())["normalization"]
    module, _ = module_from_checkpoint(checkpoints[job])
    run = onnx_runner(path) if fmt == "onnx" else torchscript_runner(path)
    x = torch.rand(2, module.hparams.in_channels, 96, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = module(x).clamp(0, 1) if job == "virtual_labeling" else module.probabilities(x)
    got = run(x.numpy())
    assert got.shape == tuple(expected.shape)
    assert np.abs(got - expected.numpy()).max() <= 1e-4


def test_parity_check_fails_loudly_on_a_wrong_export(checkpoints, tmp_path):
    module, _ = module_from_checkpoint(checkpoints["segmentation"])
    x = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    with torch.no_grad():
        right = module.probabilities(torch.from_numpy(x)).numpy()
    network = lambda t: module.probabilities(t)  # noqa: E731 - the reference
    assert check_parity(network, lambda a: right, [("real", x)], tmp_path / "m.onnx", 1e-4) == {"real": 0.0}
    with pytest.raises(ExportError, match="differs from the PyTorch model by 1.00e-03"):
        check_parity(network, lambda a: right + 1e-3, [("real", x)], tmp_path / "m.onnx", 1e-4)


def test_init_from_an_exported_package_restores_identical_weights(checkpoints, export_cfg, cfg_train):
    package = Path(export(export_cfg(f"ckpt_path={checkpoints['segmentation']}", "format=bioimageio",
                                     "bioimageio.test=false"))["output"])
    source, _ = module_from_checkpoint(checkpoints["segmentation"])
    fresh, _ = module_from_checkpoint(checkpoints["segmentation"])
    for parameter in fresh.net.parameters():
        torch.nn.init.normal_(parameter)
    report = init_weights_from(fresh, package)
    assert report["loaded"] == len(source.net.state_dict()) and not report["shape_mismatch"]
    for key, value in source.net.state_dict().items():
        assert torch.equal(value, fresh.net.state_dict()[key]), key
    other, _ = module_from_checkpoint(checkpoints["virtual_labeling"])
    with pytest.raises(CheckpointError, match="segmentation package cannot initialise a virtual_labeling model"):
        init_weights_from(other, package)
    # and through train.py's top-level init_from=
    cfg = cfg_train(*SEGMENTER, f"init_from={package}", "trainer.max_epochs=1", "test=false")
    assert cfg.model.init_from == str(package)


def test_init_from_refuses_packages_that_are_not_ours(tmp_path):
    """init_from= reads only stainless packages; anything else is refused with the file named, before any weight
    is touched."""
    import zipfile

    from stainless.models.checkpoint import is_package, package_state_dict

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "rdf.yaml").write_text("type: model\nweights:\n  onnx: {source: model.onnx}\n")
    assert is_package(foreign)
    with pytest.raises(CheckpointError, match="foreign: not a bioimage.io package made by stainless"):
        package_state_dict(foreign)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("readme.txt", "no rdf here")
    with pytest.raises(CheckpointError, match=r"empty.zip: not a bioimage.io package \(no rdf.yaml\)"):
        package_state_dict(empty)
    assert not is_package(tmp_path / "weights.ckpt")


def test_export_refuses_bad_requests(checkpoints, export_cfg, tmp_path):
    with pytest.raises(ValueError, match="format=keras: not an export format"):
        export(export_cfg(f"ckpt_path={checkpoints['segmentation']}", "format=keras"))
    taken = tmp_path / "taken.onnx"
    taken.write_text("keep me")
    with pytest.raises(FileExistsError, match="never overwrites"):
        export(export_cfg(f"ckpt_path={checkpoints['segmentation']}", "format=onnx", f"output={taken}", run="e2"))
    assert taken.read_text() == "keep me"
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a stainless checkpoint"):
        export(export_cfg(f"ckpt_path={foreign}", "format=onnx", run="e3"))


# -- physical units ----------------------------------------------------------------------------------------------


def test_pixel_size_read_from_ome_and_imagej_tiffs(tmp_path):
    image = np.zeros((3, 32, 32), np.uint16)
    tifffile.imwrite(tmp_path / "a.ome.tif", image, metadata={
        "axes": "TYX", "PhysicalSizeX": 250, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 250, "PhysicalSizeYUnit": "nm"})
    assert pixel_size(tmp_path / "a.ome.tif") == pytest.approx(0.25)
    tifffile.imwrite(tmp_path / "ij.tif", image, imagej=True, resolution=(1 / 0.4, 1 / 0.4),
                     metadata={"unit": "micron", "axes": "TYX"})
    assert pixel_size(tmp_path / "ij.tif") == pytest.approx(0.4)
    tifffile.imwrite(tmp_path / "plain.tif", image[0], resolution=(72, 72))  # a scanner's dpi is no calibration
    assert pixel_size(tmp_path / "plain.tif") is None
    tifffile.imwrite(tmp_path / "odd.tif", image, imagej=True, resolution=(2, 2), metadata={"unit": "furlong"})
    with pytest.raises(ImageReadError, match="odd.tif: unknown length unit 'furlong'"):
        pixel_size(tmp_path / "odd.tif")
    write_tiff(tmp_path / "written.tif", np.zeros((32, 32), np.float32), pixel_size=0.65)
    assert pixel_size(tmp_path / "written.tif") == pytest.approx(0.65)


class _BrightIsCell(torch.nn.Module):
    """Stands in for a trained segmenter (the network is not what is tested): bright pixels are cell."""

    size_multiple = 1

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(40.0))
        self.hparams = AttributeDict(threshold=0.5)

    def probabilities(self, x):
        return torch.sigmoid(self.scale * (x[:, :1] - 0.5))


def _disk_video(path: Path, pixel: float | None, n_frames: int = 6) -> None:
    yy, xx = np.mgrid[:64, :64]
    frames = np.stack([(((yy - 30) ** 2 + (xx - 30) ** 2) < (12 - i) ** 2).astype(np.uint8) * 200 for i in range(n_frames)])
    metadata = {"axes": "TYX"} | ({"PhysicalSizeX": pixel, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": pixel,
                                  "PhysicalSizeYUnit": "µm"} if pixel else {})
    tifffile.imwrite(path, frames, metadata=metadata)


def test_ome_video_areas_in_um2(cfg_eval, tmp_path):
    """The target of the issue: an OME-TIFF video with PhysicalSizeX = 0.5 µm gives areas in µm² equal to the pixel
    areas x 0.25 (through evaluate's video path, a thresholding stand-in for the network)."""
    from stainless.evaluation.segmentation import analyse_videos

    ome = tmp_path / "urea.ome.tif"
    _disk_video(ome, 0.5)
    checkpoint = {"datamodule_hyper_parameters": {"normalization": {"mode": "range", "vmin": 0, "vmax": 255}}}
    module = _BrightIsCell()

    def run(*overrides, name):
        out = tmp_path / name
        out.mkdir()
        cfg = cfg_eval("ckpt_path=unused", *overrides, "segmentation.overlay_video=false", "segmentation.min_size=5",
                       run=name)
        return analyse_videos(cfg, module, checkpoint, out), out

    summary, out = run(f"videos={{A:{ome}}}", name="file")
    assert summary["pixel_size_um"] == pytest.approx(0.5) and "metadata" in summary["pixel_size_source"]
    rows = list(csv.DictReader(open(out / "cells.csv")))
    assert len(rows) == 6
    for row in rows:
        assert float(row["area"]) > 50 and float(row["area_um2"]) == pytest.approx(float(row["area"]) * 0.25)
    summary, out = run(f"videos={{A:{ome}}}", "pixel_size=2.0", name="given")  # the command line wins
    row = next(csv.DictReader(open(out / "cells.csv")))
    assert summary["pixel_size_source"].startswith("pixel_size=") and float(row["area_um2"]) == pytest.approx(
        float(row["area"]) * 4.0)
    other = tmp_path / "nacl.ome.tif"  # conditions recorded with different pixel sizes cannot be compared
    _disk_video(other, 0.3)
    with pytest.raises(ImageReadError, match="nacl.ome.tif: pixel size 0.3 µm differs"):
        run(f"videos={{A:{ome},B:{other}}}", name="mixed")
    plain = tmp_path / "plain.tif"  # a video without a pixel size: pixels only, the µm columns empty
    _disk_video(plain, None)
    summary, out = run(f"videos={{A:{plain}}}", name="plain")
    assert summary["pixel_size_um"] is None and next(csv.DictReader(open(out / "cells.csv")))["area_um2"] == ""


def test_predictions_carry_the_input_pixel_size(checkpoints, cfg_eval, tmp_path):
    from stainless.evaluate import evaluate

    frames = tifffile.imread(Path(synthetic_root(checkpoints["segmentation"])) / "videos" / "UREA.tif")
    write_tiff(tmp_path / "field.tif", frames[0], pixel_size=0.5)
    summary = evaluate(cfg_eval(f"ckpt_path={checkpoints['segmentation']}", f"input={tmp_path / 'field.tif'}",
                                run="image"))
    for name in ("field_probability.tif", "field_labels.tif"):
        assert pixel_size(Path(summary["output_dir"]) / "predictions" / name) == pytest.approx(0.5)


def synthetic_root(checkpoint: Path) -> str:
    from stainless.models.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint)["datamodule_hyper_parameters"]["synthetic"]["root"]
