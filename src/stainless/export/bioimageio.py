"""bioimage.io model packages (spec 0.5, written by ``bioimageio.spec``) of stainless models, and reading their
weights back for fine-tuning.

The package holds the network as TorchScript and as a PyTorch state dict (ONNX when asked), the pre-processing
that matches the training normalisation, the post-processing of the segmenter, a test input and output made from
a real training image, a cover, a README with the evaluation figures, citations and the training config. It is
checked with ``bioimageio.core``'s ``test_model``, offline.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stainless.export.formats import ExportError

CITATIONS = {
    "virtual_labeling": [
        ("Isola P, Zhu J-Y, Zhou T, Efros AA. Image-to-image translation with conditional adversarial networks. "
         "CVPR 2017 (pix2pix).", "10.1109/CVPR.2017.632"),
        ("Ronneberger O, Fischer P, Brox T. U-Net: Convolutional networks for biomedical image segmentation. "
         "MICCAI 2015.", "10.1007/978-3-319-24574-4_28"),
    ],
    "segmentation": [
        ("Ronneberger O, Fischer P, Brox T. U-Net: Convolutional networks for biomedical image segmentation. "
         "MICCAI 2015.", "10.1007/978-3-319-24574-4_28"),
        ("He K, Zhang X, Ren S, Sun J. Deep residual learning for image recognition. CVPR 2016 (ResNet encoders).",
         "10.1109/CVPR.2016.90"),
    ],
}
INPUT_ID, OUTPUT_ID = "input", "output"


def preprocessing(normalization: dict[str, Any]) -> list:
    """bioimage.io pre-processing equal to :func:`stainless.io.normalize` with the training settings."""
    from bioimageio.spec.model import v0_5

    steps: list = [v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32"))]
    mode = normalization.get("mode", "percentile")
    if mode == "percentile":
        steps.append(v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(
            axes=[v0_5.AxisId("y"), v0_5.AxisId("x")], min_percentile=float(normalization.get("low", 1.0)),
            max_percentile=float(normalization.get("high", 99.8)), eps=1e-8)))
    elif mode == "range":
        vmin, vmax = float(normalization["vmin"]), float(normalization["vmax"])
        steps.append(v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(
            gain=1.0 / max(vmax - vmin, 1e-8), offset=-vmin / max(vmax - vmin, 1e-8))))
    else:
        raise ExportError(f"normalisation mode {mode!r} has no bioimage.io equivalent")
    if normalization.get("clip", True):
        steps.append(v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min=0.0, max=1.0)))
    return steps


def postprocessing(job: str, classes: int, threshold: float, binarize: bool) -> list:
    """The segmenter's logits to probabilities (and a mask at the trained threshold); nothing for images."""
    from bioimageio.spec.model import v0_5

    if job != "segmentation":
        return []
    if classes > 1:
        return [v0_5.SoftmaxDescr(kwargs=v0_5.SoftmaxKwargs(axis=v0_5.AxisId("channel")))]
    steps: list = [v0_5.SigmoidDescr()]
    if binarize:
        steps.append(v0_5.BinarizeDescr(kwargs=v0_5.BinarizeKwargs(threshold=float(threshold))))
    return steps


def apply_postprocessing(logits: np.ndarray, job: str, classes: int, threshold: float, binarize: bool) -> np.ndarray:
    """What :func:`postprocessing` describes, computed here, so the package's test output is ours, not core's."""
    if job != "segmentation":
        return logits
    if classes > 1:
        return torch.from_numpy(logits).softmax(1).numpy()
    probabilities = 1 / (1 + np.exp(-logits.astype(np.float64)))
    return (probabilities > threshold).astype(np.float32) if binarize else probabilities.astype(np.float32)


def min_input_size(multiple: int, halo: int) -> int:
    """The smallest input side: a multiple of what the network needs that leaves output after the halo is cropped."""
    return multiple * (2 * halo // multiple + 1)


def package_halo(wanted: int, test_side: int, multiple: int) -> int:
    """``wanted`` halo, made smaller where the test image is too small to hold it (tiny test data)."""
    return max(0, min(int(wanted), (test_side - multiple) // 2))


def _space_axes(kind: str, multiple: int, halo: int, pixel_size: float | None) -> list:
    from bioimageio.spec.model import v0_5

    unit = {"unit": "micrometer", "scale": float(pixel_size)} if pixel_size else {}
    axes = []
    for name in ("y", "x"):
        if kind == "input":
            size = v0_5.ParameterizedSize(min=min_input_size(multiple, halo), step=multiple)
            axes.append(v0_5.SpaceInputAxis(id=v0_5.AxisId(name), size=size, **unit))
        else:
            size = v0_5.SizeReference(tensor_id=v0_5.TensorId(INPUT_ID), axis_id=v0_5.AxisId(name))
            axes.append(v0_5.SpaceOutputAxisWithHalo(id=v0_5.AxisId(name), size=size, halo=halo, **unit) if halo else
                        v0_5.SpaceOutputAxis(id=v0_5.AxisId(name), size=size, **unit))
    return axes


def readme(info: dict[str, Any], evaluation: dict[str, Any] | None) -> str:
    """The package's documentation: what the model does, its inputs, and a ``# Validation`` section with the
    figures of ``evaluate.py`` (or a statement that there are none)."""
    job = info["job"]
    task = ("predicts a fluorescence image from another image of the same field (virtual labeling, pix2pix)"
            if job == "virtual_labeling" else "segments cells (foreground probability, binarised at the trained "
            f"threshold {info['threshold']:g})")
    lines = [
        f"# {info['name']}", "",
        f"A stainless model that {task}.", "",
        "## Input", "",
        f"{info['in_channels']} channel(s), any height and width that are multiples of {info['multiple']} pixels "
        f"(at least {info['min_size']}). The package normalises raw images itself: {info['normalization_text']}.",
        f"Pixel size in training: {info['pixel_size']:g} µm." if info.get("pixel_size") else
        "Pixel size in training: not recorded in the training images.", "",
        "For images larger than memory allows, predict in tiles with the halo below cropped from each tile "
        f"(halo {info['halo']} pixels).", "",
        "## Training", "",
        f"Trained with stainless from `{info['checkpoint']}`; the full training configuration is attached "
        "(`training_config.yaml`).", "",
        "# Validation", "",
    ]
    if not evaluation:
        lines += ["No evaluation of this checkpoint was found when it was exported (run `python evaluate.py "
                  "ckpt_path=...` and export again, or pass `evaluation=<its run directory>`)."]
        return "\n".join(lines) + "\n"
    lines += [f"Scored by stainless `evaluate.py` on {evaluation.get('n_images', '?')} image(s) "
              f"({evaluation.get('input', 'held-out data')}); mean ± standard deviation over images.", ""]
    metrics = evaluation.get("metrics", {})
    names = list(dict.fromkeys(n for stats in metrics.values() for n in stats))
    if names:
        lines += ["| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for method, stats in metrics.items():
            cells = [f"{stats[n]['mean']:.4g} ± {stats[n]['std']:.2g}" if n in stats else "" for n in names]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if evaluation.get("objects_by_iou", {}).get("0.5"):
        objects = evaluation["objects_by_iou"]["0.5"]
        lines += ["", f"Objects matched at IoU 0.5: F1 {objects['f1']:.3f} (precision {objects['precision']:.3f}, "
                      f"recall {objects['recall']:.3f})."]
    lines += ["", "`baseline_input` is the rescaled input and `baseline_mean` a constant image: a model worth using "
              "beats both." if job == "virtual_labeling" else ""]
    return "\n".join(lines).rstrip() + "\n"


def cover(raw: np.ndarray, output: np.ndarray, path: Path) -> Path:
    """Input beside output (first channel of each, contrast-stretched) as a PNG."""
    import imageio.v3 as iio

    from stainless.io import normalize

    panels = [normalize(raw[:1], low=0.5, high=99.5)[0], np.clip(output[0], 0, 1) if output.max() <= 1 else
              normalize(output[:1])[0]]
    gap = np.ones((panels[0].shape[0], 4), np.float32)
    image = np.concatenate([panels[0], gap, panels[1]], axis=1)
    iio.imwrite(path, (image * 255).astype(np.uint8))
    return path


def build_package(*, network_raw: torch.nn.Module, kwargs: dict[str, Any], info: dict[str, Any],
                  test_input: np.ndarray, evaluation: dict[str, Any] | None, training_config: str, options: dict[str, Any],
                  output: Path, work: Path, tolerance: float) -> dict[str, dict[str, float]]:
    """Write ``output`` (a .zip, or a folder when it has no suffix) holding a bioimage.io model package.

    Args:
        network_raw: the network without final activation for segmenters (the package post-processes).
        kwargs: :class:`InferenceNetwork` keyword arguments (output ``raw``) for the state-dict weights.
        info: job, name, description, multiple, halo, normalization, threshold, classes, pixel_size, checkpoint.
        test_input: a raw (not normalised) crop (C, H, W) of a training image.
        tolerance: largest difference allowed between each weight format and the PyTorch network.

    Returns:
        the largest difference of each exported weight format from PyTorch, per input (see ``check_parity``).

    Raises:
        ExportError: an exported format that does not reproduce the network.
    """
    from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder
    from bioimageio.spec.model import v0_5

    from stainless.export.formats import (
        ONNX_OPSET,
        check_parity,
        onnx_runner,
        parity_inputs,
        torchscript_runner,
        write_onnx,
        write_torchscript,
    )
    from stainless.io import normalize

    job, multiple, halo = info["job"], info["multiple"], info["halo"]
    x = normalize(test_input, **info["normalization"])[None]
    with torch.no_grad():
        raw_out = network_raw(torch.from_numpy(x)).numpy()
    test_output = apply_postprocessing(raw_out, job, info["classes"], info["threshold"], options["binarize"])
    np.save(work / "test_input.npy", test_input[None].astype(np.float32))
    np.save(work / "test_output.npy", test_output.astype(np.float32))
    torch.save(network_raw.state_dict(), work / "weights.pt")
    example = torch.from_numpy(x)
    inputs = parity_inputs(x, multiple)
    write_torchscript(network_raw, example, work / "weights_torchscript.pt")
    parity = {"torchscript": check_parity(network_raw, torchscript_runner(work / "weights_torchscript.pt"), inputs,
                                          work / "weights_torchscript.pt", tolerance)}
    (work / "README.md").write_text(readme(info, evaluation))
    (work / "training_config.yaml").write_text(training_config)
    cover(test_input, test_output[0], work / "cover.png")

    pytorch_version = v0_5.Version(torch.__version__.split("+")[0])
    architecture = v0_5.ArchitectureFromLibraryDescr(
        callable=v0_5.Identifier("InferenceNetwork"), import_from="stainless.models.inference_network", kwargs=kwargs)
    weights = {
        "pytorch_state_dict": v0_5.PytorchStateDictWeightsDescr(
            source=work / "weights.pt", architecture=architecture, pytorch_version=pytorch_version),
        "torchscript": v0_5.TorchscriptWeightsDescr(
            source=work / "weights_torchscript.pt", pytorch_version=pytorch_version, parent="pytorch_state_dict"),
    }
    if options.get("onnx"):
        write_onnx(network_raw, example, work / "weights.onnx")
        parity["onnx"] = check_parity(network_raw, onnx_runner(work / "weights.onnx"), inputs, work / "weights.onnx",
                                      tolerance)
        weights["onnx"] = v0_5.OnnxWeightsDescr(source=work / "weights.onnx", opset_version=ONNX_OPSET,
                                                parent="pytorch_state_dict")
    in_channels, out_channels = test_input.shape[0], test_output.shape[1]
    inputs = [v0_5.InputTensorDescr(
        id=v0_5.TensorId(INPUT_ID), description="raw image (any numeric type), normalised by the pre-processing",
        axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=[v0_5.Identifier(f"c{i}") for i in range(in_channels)]),
              *_space_axes("input", multiple, halo, info.get("pixel_size"))],
        test_tensor=v0_5.FileDescr(source=work / "test_input.npy"),
        preprocessing=preprocessing(info["normalization"]))]
    what = "predicted image in [0, 1]" if job == "virtual_labeling" else (
        "foreground mask (0/1)" if options["binarize"] and info["classes"] == 1 else "probabilities")
    if info.get("instances", "none") != "none":
        what = f"channel 0: foreground probability; 1: the instance head's {info['instances']} map (seeded watershed)"
    outputs = [v0_5.OutputTensorDescr(
        id=v0_5.TensorId(OUTPUT_ID), description=what,
        axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=[v0_5.Identifier(f"c{i}") for i in range(out_channels)]),
              *_space_axes("output", multiple, halo, info.get("pixel_size"))],
        test_tensor=v0_5.FileDescr(source=work / "test_output.npy"),
        postprocessing=postprocessing(job, info["classes"], info["threshold"], options["binarize"]))]
    authors = [v0_5.Author(**{k: v for k, v in dict(a).items() if v is not None}) for a in options["authors"]]
    descr = v0_5.ModelDescr(
        name=info["name"], description=info["description"], authors=authors,
        cite=[v0_5.CiteEntry(text=text, doi=v0_5.Doi(doi)) for text, doi in CITATIONS[job]],
        license=v0_5.LicenseId(options["license"]), documentation=v0_5.FileDescr(source=work / "README.md"),
        covers=[v0_5.FileDescr(source=work / "cover.png")],
        tags=["stainless", "pix2pix" if job == "virtual_labeling" else "segmentation", "2d", "pytorch"],
        inputs=inputs, outputs=outputs, weights=v0_5.WeightsDescr(**weights),
        attachments=[v0_5.FileDescr(source=work / "training_config.yaml")],
        config={"stainless": {"job": job, "network": kwargs, "size_multiple": multiple, "halo": halo,
                              "normalization": info["normalization"], "threshold": info["threshold"],
                              "pixel_size_um": info.get("pixel_size"), "checkpoint": info["checkpoint"]}},
    )
    if output.suffix:
        save_bioimageio_package(descr, output_path=output)
    else:
        save_bioimageio_package_as_folder(descr, output_path=output)
    return parity


def test_package(path: Path) -> dict[str, Any]:
    """``bioimageio.core.test_model`` on a package, offline, with a temporary cache.

    Returns:
        ``status`` (``passed`` or ``failed``) and the failing checks' messages.
    """
    cache = tempfile.mkdtemp(prefix="bioimageio_cache_")
    previous = {k: os.environ.get(k) for k in ("BIOIMAGEIO_CACHE_PATH", "HF_HUB_OFFLINE")}
    os.environ.update(BIOIMAGEIO_CACHE_PATH=cache, HF_HUB_OFFLINE="1")
    try:
        from bioimageio.core import test_model

        summary = test_model(str(path))
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(cache, ignore_errors=True)
    failures = [f"{d.name}: {e.msg.splitlines()[0][:300]}" for d in summary.details for e in d.errors]
    return {"status": summary.status, "failures": failures}
