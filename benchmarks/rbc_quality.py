"""Segmentation quality and shrink-kinetics recovery on the synthetic RBC data (the demo recipe).

Targets (issue 3): IoU >= 0.9 on the synthetic test frames; recovered time constants within 10% of the truth.
Writes benchmarks/results/rbc_quality.json and prints a one-line summary. Run from the repository root:
    .venv/bin/python benchmarks/rbc_quality.py
"""

import json
import platform
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from stainless.demo import rbc_segmentation  # noqa: E402


def main() -> None:
    started = time.time()
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    result = rbc_segmentation(Path("outputs") / "benchmarks" / f"rbc_quality_{stamp}")
    worst = max(c["tau_error"] for c in result["conditions"].values())
    record = {
        "benchmark": "rbc_quality", "date": stamp, "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "command": ".venv/bin/python benchmarks/rbc_quality.py", "duration_s": round(time.time() - started, 1),
        "targets": {"iou": 0.9, "tau_error": 0.10},
        "iou_ok": result["iou"] >= 0.9, "tau_ok": worst <= 0.10, **result,
    }
    out = ROOT / "benchmarks" / "results" / "rbc_quality.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"rbc_quality: IoU {result['iou']:.3f} (target 0.9), worst tau error {worst:.1%} (target 10%), "
          f"object F1 {result['object_f1']:.3f} -> {out}")


if __name__ == "__main__":
    main()
