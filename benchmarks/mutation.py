"""Mutation testing of the core modules (``make mutate``): how many deliberate small bugs the fast tests catch.

mutmut (3.x) copies ``src/`` to ``mutants/``, changes one operator, constant or call at a time in the modules listed
under ``[tool.mutmut] only_mutate`` in pyproject.toml (object matching and sizes, instance decoding, image metrics,
tiling, tracking, shrink fits, instance targets), and runs the tests that reach the changed function (the fast test
files of ``pytest_add_cli_args_test_selection``; tests marked ``slow`` train networks and are left out). A mutant is
*killed* when a test fails, *survived* when all pass. Writes ``benchmarks/results/mutation.json``: per module killed /
survived / timeout / no tests, the kill rate (target >= 85%), and the survivors by name (``mutmut show <name>``
prints the change).

Run from the repository root: ``make mutate`` (installs mutmut; about 5-10 minutes on 2 cores: 1,523 mutants took 5).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter, defaultdict

from common import ROOT, write_result

TARGET = 0.85


def mutmut(*args: str) -> str:
    # one thread: mutmut forks a process per mutant, and a fork of a process whose OpenMP pool is running can hang
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode not in (0, 1):  # 1: some mutants survived
        raise RuntimeError(f"mutmut {' '.join(args)} failed: {done.stderr[-3000:]}")
    return done.stdout


def module_of(key: str) -> str:
    """``stainless.metrics.objects.x_match_objects__mutmut_3`` -> ``stainless.metrics.objects`` (methods too:
    ``stainless.video.track.xǁTrackOutputsǁwrite__mutmut_2``)."""
    return key.partition(".x")[0]


def main() -> None:
    started = time.time()
    mutmut("run", "--max-children", str(max(1, (os.cpu_count() or 2))))
    counts: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for line in mutmut("results", "--all", "true").splitlines():
        if ":" not in line:
            continue
        key, status = (part.strip() for part in line.rsplit(":", 1))
        module = module_of(key)
        counts[module][status] += 1
        if status == "survived":
            survivors[module].append(key)
    modules = {}
    for module, c in sorted(counts.items()):
        tested = c["killed"] + c["survived"] + c["timeout"]
        rate = (c["killed"] + c["timeout"]) / tested if tested else None
        modules[module] = {**dict(c), "tested": tested, "kill_rate": rate,
                           "meets_target": rate is not None and rate >= TARGET, "survivors": survivors[module]}
    total = Counter()
    for c in counts.values():
        total.update(c)
    tested = total["killed"] + total["survived"] + total["timeout"]
    record = {"target_kill_rate": TARGET, "modules": modules, "total": dict(total),
              "kill_rate": (total["killed"] + total["timeout"]) / tested if tested else None,
              "duration_s": round(time.time() - started, 1)}
    write_result("mutation", record, ", ".join(
        f"{m.split('.')[-1]} {v['kill_rate']:.0%}" if v["kill_rate"] is not None else f"{m.split('.')[-1]} untested"
        for m, v in modules.items()))


if __name__ == "__main__":
    main()
