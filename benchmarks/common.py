"""Shared by the benchmark scripts: where results go, what machine ran them, medians and timers."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "benchmarks" / "results"
SHARED_DATA = Path(os.environ.get("STAINLESS_SHARED_DATA", ROOT.parent / "shared" / "data"))


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}


def median(values) -> float:
    return float(statistics.median(values))


def write_result(name: str, record: dict, summary: str) -> Path:
    """Write ``benchmarks/results/<name>.json`` (with date, machine and command) and print the summary line."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "date": datetime.now().isoformat(timespec="seconds"), "machine": machine(),
              "command": f".venv/bin/python benchmarks/{Path(sys.argv[0]).name}", **record, "summary": summary}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"{name}: {summary} -> {path.relative_to(ROOT)}", flush=True)
    return path


class StepTimer:
    """Wall-clock times between consecutive calls of :meth:`tick` (one call per training step)."""

    def __init__(self) -> None:
        self.last: float | None = None
        self.times: list[float] = []

    def tick(self) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.times.append(now - self.last)
        self.last = now
