"""Segmentation quality, tracking and shrink-kinetics recovery on the synthetic RBC data (the demo recipe).

Targets: IoU >= 0.9 on the synthetic test frames; recovered time constants within 10% of the truth; Cell Tracking
Challenge TRA >= 0.95 against the generator's ground truth. Writes benchmarks/results/rbc_quality.json (with the
commit and command) and prints a one-line summary. Run from the repository root:
    .venv/bin/python benchmarks/rbc_quality.py
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from common import write_result

from stainless.demo import rbc_segmentation


def main() -> None:
    started = time.time()
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    result = rbc_segmentation(Path("outputs") / "benchmarks" / f"rbc_quality_{stamp}")
    worst = max(c["tau_error"] for c in result["conditions"].values())
    tra = [c["tra"] for c in result["conditions"].values() if c.get("tra") is not None]
    record = {"duration_s": round(time.time() - started, 1), "targets": {"iou": 0.9, "tau_error": 0.10, "tra": 0.95},
              "iou_ok": result["iou"] >= 0.9, "tau_ok": worst <= 0.10, "tra_ok": bool(tra) and min(tra) >= 0.95,
              **result}
    write_result("rbc_quality", record,
                 f"IoU {result['iou']:.3f} (target 0.9), worst tau error {worst:.1%} (target 10%), object F1 "
                 f"{result['object_f1']:.3f}, lowest TRA {min(tra) if tra else float('nan'):.3f} (target 0.95)")


if __name__ == "__main__":
    main()
