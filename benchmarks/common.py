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


def mean_sd(values) -> dict:
    """Mean and sample standard deviation (0 for a single value) of repeated runs."""
    values = list(values)
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def run(args: list[str], cwd: Path) -> None:
    """Run a repository script (``train.py ...``) with this Python; its stderr tail in the error if it fails."""
    import subprocess

    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args[:3])}...: {done.stderr[-3000:]}")


def commit() -> str:
    """The commit the benchmark ran on (``+dirty`` when the work tree had uncommitted changes outside
    ``benchmarks/results/``)."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        # results written by an earlier benchmark of the same `make bench` are not a change of the code
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.strip() + ("+dirty" if dirty else "")


# taken when the script starts: a long benchmark records the code it ran, even if the tree moves on meanwhile
STARTED_ON = commit()


def write_result(name: str, record: dict, summary: str) -> Path:
    """Write ``benchmarks/results/<name>.json`` (with date, machine, commit and command) and print the summary."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "date": datetime.now().isoformat(timespec="seconds"), "machine": machine(),
              "commit": STARTED_ON, "command": " ".join([".venv/bin/python", f"benchmarks/{Path(sys.argv[0]).name}",
                                                      *sys.argv[1:]]), **record, "summary": summary}
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
