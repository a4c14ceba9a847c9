"""Exported models of the demo: bioimage.io packages through bioimageio.core's test_model (offline), ONNX and
TorchScript parity with PyTorch, and CPU inference time of each format beside PyTorch.

Uses the newest ``make demo`` run under outputs/demo/ (runs the demo first when there is none, about 10 minutes).
Result: benchmarks/results/export.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, write_result


def demo_checkpoints(demo: Path | None) -> dict[str, Path]:
    if demo is None:
        runs = sorted((ROOT / "outputs" / "demo").glob("*/rbc/train/summary.json"))
        if not runs:
            subprocess.run([sys.executable, "-m", "stainless.demo"], cwd=ROOT, check=False)
            runs = sorted((ROOT / "outputs" / "demo").glob("*/rbc/train/summary.json"))
        demo = runs[-1].parents[2]
    found = {}
    for job, folder in (("virtual_labeling", "virtual_labeling"), ("segmentation", "rbc")):
        summary = json.loads((demo / folder / "train" / "summary.json").read_text())
        found[job] = Path(summary["best_model_path"] or summary["last_model_path"])
    return found


def export(ckpt: Path, fmt: str, out: Path, *extra: str) -> dict:
    run = out / f"{ckpt.parents[2].name}_{fmt}"
    subprocess.run([sys.executable, str(ROOT / "export.py"), f"ckpt_path={ckpt}", f"format={fmt}",
                    f"hydra.run.dir={run}", *extra], cwd=ROOT, check=True)
    return json.loads((run / "summary.json").read_text())


def timings(ckpt: Path, onnx: Path, torchscript: Path, size: int, repeats: int) -> dict:
    import numpy as np
    import torch

    from stainless.export.formats import onnx_runner, time_runs, torchscript_runner
    from stainless.models.checkpoint import module_from_checkpoint
    from stainless.models.inference_network import inference_network

    module, _ = module_from_checkpoint(ckpt)
    network = inference_network(module, "final")
    x = np.random.default_rng(0).random((1, module.hparams.in_channels, size, size), dtype=np.float32)

    def pytorch(a):
        with torch.inference_mode():
            return network(torch.from_numpy(a)).numpy()

    runs = {"pytorch": pytorch, "onnxruntime": onnx_runner(onnx), "torchscript": torchscript_runner(torchscript)}
    seconds = {name: time_runs(run, x, repeats) for name, run in runs.items()}
    return {"input": [1, module.hparams.in_channels, size, size], "seconds": seconds,
            "speedup_vs_pytorch": {k: seconds["pytorch"] / v for k, v in seconds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--demo", type=Path, help="a make demo run directory (outputs/demo/<time>)")
    parser.add_argument("--size", type=int, default=512, help="side of the timed input")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    out = Path(tempfile.mkdtemp(prefix="stainless_export_bench_"))
    record = {"models": {}}
    for job, ckpt in demo_checkpoints(args.demo).items():
        package = export(ckpt, "bioimageio", out, "bioimageio.onnx=true")
        onnx = export(ckpt, "onnx", out)
        torchscript = export(ckpt, "torchscript", out)
        record["models"][job] = {
            "checkpoint": str(ckpt), "test_model": package["test_model"],
            "max_abs_difference": {"package": package["max_abs_difference"], "onnx": onnx["max_abs_difference"]["onnx"],
                                   "torchscript": torchscript["max_abs_difference"]["torchscript"]},
            "timing": timings(ckpt, Path(onnx["output"]), Path(torchscript["output"]), args.size, args.repeats),
        }
    parts = []
    for job, m in record["models"].items():
        worst = max(v for d in (m["max_abs_difference"]["onnx"], m["max_abs_difference"]["torchscript"]) for v in d.values())
        t = m["timing"]["seconds"]
        parts.append(f"{job}: test_model {m['test_model']['status']}, ONNX/TorchScript within {worst:.1e}; "
                     f"{args.size}px: PyTorch {t['pytorch'] * 1000:.0f} ms, ONNX {t['onnxruntime'] * 1000:.0f} ms, "
                     f"TorchScript {t['torchscript'] * 1000:.0f} ms")
    write_result("export", record, "; ".join(parts))


if __name__ == "__main__":
    main()
