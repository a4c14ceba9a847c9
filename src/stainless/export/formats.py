"""TorchScript and ONNX files of an :class:`~stainless.models.inference_network.InferenceNetwork`, each checked
against the PyTorch network on random and real inputs before it is kept."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

ONNX_OPSET = 17  # deepImageJ runs ONNX up to opset 18


class ExportError(ValueError):
    """An export that cannot be made or that does not reproduce the PyTorch model."""


def write_torchscript(network: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Trace ``network`` (no data-dependent control flow in our networks) and save it; sizes stay dynamic."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in PyTorch, still what Fiji runs
        traced = torch.jit.trace(network, example, check_trace=False)
    traced.save(str(path))
    return path


def write_onnx(network: torch.nn.Module, example: torch.Tensor, path: Path, opset: int = ONNX_OPSET) -> Path:
    """ONNX with dynamic batch, height and width (the TorchScript-based exporter: opset <= 18 for deepImageJ)."""
    axes = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(network, (example,), str(path), dynamo=False, opset_version=opset, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": axes, "output": axes})
    return path


def torchscript_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return scripted(torch.from_numpy(x)).numpy()

    return run


def onnx_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def check_parity(network: torch.nn.Module, run: Callable[[np.ndarray], np.ndarray], inputs: Sequence[tuple[str, np.ndarray]],
                 path: Path, tolerance: float) -> dict[str, float]:
    """Largest absolute difference between ``network`` and an exported copy on each named input.

    Raises:
        ExportError: a difference above ``tolerance`` (the file is then not to be trusted).
    """
    differences = {}
    for name, x in inputs:
        with torch.no_grad():
            expected = network(torch.from_numpy(x)).numpy()
        got = run(x)
        if got.shape != expected.shape:
            raise ExportError(f"{path}: output shape {got.shape} on the {name} input, PyTorch gives {expected.shape}")
        differences[name] = float(np.abs(got - expected).max())
        if not differences[name] <= tolerance:
            raise ExportError(f"{path}: differs from the PyTorch model by {differences[name]:.2e} on the {name} input "
                              f"{tuple(x.shape)} (tolerance {tolerance:g}); the export is wrong, do not use it")
    return differences


def parity_inputs(real: np.ndarray, multiple: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """A real normalised crop (1, C, H, W) and a random input of another size (both multiples of ``multiple``), so
    that the dynamic height and width are exercised."""
    rng = np.random.default_rng(seed)
    c, h, w = real.shape[1:]
    size = (multiple * max(1, h // multiple + 1), multiple * max(1, w // multiple + 2))
    return [("real", real.astype(np.float32)), ("random", rng.random((1, c, *size), dtype=np.float32))]


def time_runs(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, repeats: int = 5) -> float:
    """Median seconds per call after one warm-up call."""
    run(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times))
