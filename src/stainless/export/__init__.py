"""Trained models that leave the project: ``export(cfg)`` writes a bioimage.io package, an ONNX or a TorchScript
file of a stainless checkpoint (either job), each checked against the PyTorch model before it is kept."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf

from stainless.export.formats import (
    ExportError,
    check_parity,
    onnx_runner,
    parity_inputs,
    torchscript_runner,
    write_onnx,
    write_torchscript,
)
from stainless.models.checkpoint import CheckpointError, module_from_checkpoint
from stainless.models.ensemble import checkpoint_paths
from stainless.models.inference_network import inference_network, network_kwargs

FORMATS = {"bioimageio": ".zip", "onnx": ".onnx", "torchscript": ".pt"}
MAX_TEST_SIZE = 256  # side of the real crop used as test tensor and parity input


def _real_crop(checkpoint: dict[str, Any], multiple: int) -> tuple[np.ndarray, Path | None]:
    """A raw (not normalised) centre crop (C, H, W) of the first image of the checkpoint's data, with sides that
    are multiples of ``multiple``, and the file it came from."""
    from stainless.data.datamodule import MicroscopyDataModule
    from stainless.data.datasets import load_sample

    data_hp = checkpoint["datamodule_hyper_parameters"]
    datamodule = MicroscopyDataModule(**data_hp)
    datamodule.prepare_data()
    splits = datamodule.find_samples()
    sample = next((s for split in ("train", "val", "test") for s in splits.get(split) or []), None)
    if sample is None:
        raise ExportError("the checkpoint's data has no images left to make the package's test input from")
    identity = {"mode": "range", "vmin": 0.0, "vmax": 1.0, "clip": False}
    raw = load_sample(sample, identity, "image" if sample.source.suffix != ".json" else "mask",
                      data_hp.get("channel_axis", "auto"), **datamodule.load_options).source
    h, w = raw.shape[-2:]
    side_h = min(h, MAX_TEST_SIZE) // multiple * multiple
    side_w = min(w, MAX_TEST_SIZE) // multiple * multiple
    if not side_h or not side_w:
        raise ExportError(f"{sample.source}: {h}x{w} pixels, smaller than the {multiple} px the network needs")
    top, left = (h - side_h) // 2, (w - side_w) // 2
    source_file = sample.source if sample.source.suffix.lower() != ".json" else None
    return np.ascontiguousarray(raw[:, top:top + side_h, left:left + side_w]), source_file


def find_evaluation(cfg: DictConfig, checkpoint_path: Path) -> dict[str, Any] | None:
    """``summary.json`` of ``cfg.evaluation`` (a run directory or the file), else of the newest evaluation of this
    checkpoint under ``outputs/evaluate``; None when there is none."""
    if cfg.get("evaluation"):
        path = Path(cfg.evaluation)
        path = path / "summary.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"evaluation={cfg.evaluation}: no summary.json of an evaluate.py run there")
        return json.loads(path.read_text())
    found = []
    for path in Path(cfg.paths.log_dir, "evaluate").glob("**/summary.json"):
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if summary.get("checkpoint") == str(checkpoint_path) and summary.get("metrics"):
            found.append((path.stat().st_mtime, summary))
    return max(found, key=lambda item: item[0])[1] if found else None


def _training_config(checkpoint_path: Path, checkpoint: dict[str, Any]) -> str:
    resolved = checkpoint_path.parent.parent / "config_resolved.yaml"
    if resolved.is_file():
        return resolved.read_text()
    return yaml.safe_dump({"model": checkpoint.get("hyper_parameters", {}),
                           "data": checkpoint.get("datamodule_hyper_parameters", {})}, sort_keys=False)


def _normalization_text(normalization: dict[str, Any]) -> str:
    if normalization.get("mode", "percentile") == "percentile":
        return (f"each channel rescaled between its {normalization.get('low', 1.0):g} and "
                f"{normalization.get('high', 99.8):g} percentiles, clipped to [0, 1]")
    return f"values rescaled from [{normalization['vmin']:g}, {normalization['vmax']:g}] to [0, 1]"


def output_path(cfg: DictConfig, name: str) -> Path:
    """Where the export goes: ``cfg.output``, else ``<run dir>/<name><suffix>``; never an existing path.

    Raises:
        FileExistsError: the path exists (an export is never overwritten).
    """
    path = Path(cfg.output) if cfg.get("output") else Path(cfg.paths.output_dir) / f"{name}{FORMATS[cfg.format]}"
    if path.exists():
        raise FileExistsError(f"output={path}: already exists; stainless never overwrites an export, choose another path")
    return path


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt_path`` as ``cfg.format`` and check the result; writes ``summary.json`` in the run directory.

    Returns:
        the summary: output path, largest differences from PyTorch per format and input, ``test_model`` status.

    Raises:
        ExportError, CheckpointError, FileExistsError: one line naming the file or setting at fault.
    """
    started = time.time()
    if cfg.format not in FORMATS:
        raise ValueError(f"format={cfg.format}: not an export format; use one of {', '.join(FORMATS)}")
    paths = checkpoint_paths(cfg.ckpt_path)
    if len(paths) > 1:  # a list averages models in evaluate.py; an export is one network
        raise CheckpointError(f"ckpt_path=[{','.join(paths)}]: export takes one checkpoint; an ensemble's maps "
                              "are averaged by evaluate.py, so export each member")
    checkpoint_path = Path(paths[0]).expanduser().resolve()
    module, checkpoint = module_from_checkpoint(checkpoint_path, cfg.get("trust_checkpoint", False))
    if not checkpoint.get("datamodule_hyper_parameters"):
        raise CheckpointError(f"{checkpoint_path}: holds no data settings (was it written by stainless train?)")
    kwargs = network_kwargs(module)
    job = kwargs["job"]
    name = cfg.get("name") or f"stainless_{job}"
    out = output_path(cfg, name)
    data_hp = checkpoint["datamodule_hyper_parameters"]
    normalization = {"mode": "percentile", "low": 1.0, "high": 99.8, "clip": True, **(data_hp.get("normalization") or {})}
    multiple = int(module.size_multiple)
    raw, source_file = _real_crop(checkpoint, multiple)
    from stainless.io import normalize, pixel_size

    pixel = cfg.get("pixel_size") or (pixel_size(source_file) if source_file is not None else None)
    real = normalize(raw, **normalization)[None]
    out.parent.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"checkpoint": str(checkpoint_path), "format": cfg.format, "output": str(out), "job": job,
                               "size_multiple": multiple, "pixel_size_um": pixel, "normalization": normalization}
    if cfg.format in ("onnx", "torchscript"):
        network = inference_network(module, "final")
        writer, runner = (write_onnx, onnx_runner) if cfg.format == "onnx" else (write_torchscript, torchscript_runner)
        partial = out.with_name(f".{out.name}.partial")
        try:
            writer(network, torch.from_numpy(real), partial)
            summary["max_abs_difference"] = {cfg.format: check_parity(network, runner(partial),
                                                                       parity_inputs(real, multiple), out, cfg.tolerance)}
            partial.rename(out)
        finally:
            partial.unlink(missing_ok=True)
        # how to feed the file: everything evaluate.py would do before and after the network
        sidecar = {"input": f"float32 (N, {kwargs['in_channels']}, H, W), H and W multiples of {multiple}, "
                            "normalised as below", "normalization": normalization,
                   "output": "image in [0, 1]" if job == "virtual_labeling" else "probabilities (sigmoid or softmax)" + (
                       f", then the instance head's {module.hparams.instances} map" if kwargs.get("instance_channels")
                       else ""),
                   "threshold": module.hparams.get("threshold"), "pixel_size_um": pixel, "network": kwargs}
        out.with_suffix(out.suffix + ".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    else:
        from stainless.export.bioimageio import build_package, min_input_size, package_halo, test_package

        options = OmegaConf.to_container(cfg.bioimageio, resolve=True)
        if kwargs.get("instance_channels"):
            if kwargs["out_channels"] > 1:
                raise ExportError(f"{checkpoint_path}: a multi-class segmenter with an instance head cannot be a "
                                  "bioimage.io package (the softmax would mix its map with the classes); export "
                                  "format=onnx or torchscript")
            # one sigmoid gives both channels; a 0/1 mask would destroy the instance map
            options["binarize"] = False
        evaluation = find_evaluation(cfg, checkpoint_path)
        if evaluation is None:
            rank_zero_info("No evaluation of this checkpoint found: the package README says so "
                           "(run evaluate.py first, or pass evaluation=<its run directory>)")
        halo = package_halo(cfg.halo, min(raw.shape[-2:]), multiple)
        raw_kwargs = {**kwargs, "output": "raw" if job == "segmentation" else "final"}
        info = {"job": job, "name": options.get("name") or name.replace("_", " "),
                "description": options.get("description") or (
                    "Virtual labeling (pix2pix generator) trained with stainless" if job == "virtual_labeling"
                    else f"Cell segmentation ({kwargs['arch']}, {kwargs['network'].get('encoder_name')}) trained with stainless"),
                "multiple": multiple, "halo": halo, "min_size": min_input_size(multiple, halo),
                "normalization": normalization, "normalization_text": _normalization_text(normalization),
                "threshold": float(module.hparams.get("threshold", 0.5)), "classes": kwargs["out_channels"],
                "instances": str(module.hparams.get("instances", "none")) if job == "segmentation" else "none",
                "pixel_size": pixel, "checkpoint": str(checkpoint_path), "in_channels": kwargs["in_channels"]}
        work = Path(tempfile.mkdtemp(prefix="stainless_export_"))
        try:
            network = inference_network(module, raw_kwargs["output"])
            summary["max_abs_difference"] = build_package(
                network_raw=network, kwargs=raw_kwargs, info=info, test_input=raw, evaluation=evaluation,
                training_config=_training_config(checkpoint_path, checkpoint), options=options, output=out, work=work,
                tolerance=cfg.tolerance)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        summary["evaluation_in_readme"] = evaluation is not None
        if options.get("test", True):
            summary["test_model"] = test_package(out)
            if summary["test_model"]["status"] != "passed":
                failed = out.with_name(out.name + ".failed")
                out.rename(failed)
                raise ExportError(f"{failed}: bioimageio.core test_model failed: "
                                  + "; ".join(summary["test_model"]["failures"][:3]))
    summary["duration_s"] = round(time.time() - started, 1)
    from stainless.utils.logging import write_json

    write_json(Path(cfg.paths.output_dir) / "summary.json", summary)
    checks = ", ".join(f"{fmt} within {max(d.values()):.1e} of PyTorch" for fmt, d in summary["max_abs_difference"].items())
    tested = f"; bioimageio.core test_model: {summary['test_model']['status']}" if "test_model" in summary else ""
    rank_zero_info(f"Exported {out} ({checks}{tested})")
    return summary
