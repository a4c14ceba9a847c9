"""Inference speed and memory: tiled evaluation against the bare network, and peak memory by image size.

3. A 2048 x 2048 image predicted by tiles (overlap 0.25, blended) against the bare network run on the same tiles
   [target: overhead <= 10%]; peak memory for 1024^2, 2048^2 and 4096^2 images, each in a fresh process
   [target: the working memory beyond the image-sized arrays stays flat].

Run from the repository root: .venv/bin/python benchmarks/speed_inference.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import torch
from common import ROOT, median, write_result

from stainless.data.datasets import grid_starts
from stainless.inference.tiling import predict_tiled

TILE, OVERLAP, BATCH = 256, 0.25, 4


def generator():
    """The demo recipe's generator (pix2pix U-Net, ngf 32, 7 levels) in eval mode: what evaluate.py runs."""
    from speed_training import pix2pix_module

    module = pix2pix_module().eval()
    return lambda x: module(x).clamp(0, 1)


def tiles_of(image: torch.Tensor) -> torch.Tensor:
    stride = int(round(TILE * (1 - OVERLAP)))
    h, w = image.shape[-2:]
    return torch.stack([image[:, t : t + TILE, l : l + TILE] for t in grid_starts(h, TILE, stride)
                        for l in grid_starts(w, TILE, stride)])


@torch.no_grad()
def bare(predict, tiles: torch.Tensor) -> None:
    for start in range(0, len(tiles), BATCH):
        predict(tiles[start : start + BATCH])


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), in MiB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_memory(size: int) -> dict:
    """Run in a fresh process: resident memory just before one tiled prediction, and its peak during it
    (sampled every 2 ms by a second thread)."""
    predict = generator()
    image = torch.rand(1, size, size)
    predict_tiled(predict, torch.rand(1, TILE, TILE), TILE, OVERLAP, BATCH)  # warm up the allocator
    before, peak, running = rss_mb(), [0.0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    output = predict_tiled(predict, image, TILE, OVERLAP, BATCH)
    running[0] = False
    sampler.join()
    peak_mb = max(peak[0], rss_mb())
    # image-sized arrays: the output and the blending weights (float32 each), which any whole-image result needs
    image_arrays = 2 * output.numel() * 4 / 2**20
    return {"size": size, "rss_before_mb": before, "rss_peak_mb": peak_mb, "growth_mb": peak_mb - before,
            "image_sized_arrays_mb": image_arrays, "working_mb": peak_mb - before - image_arrays}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory", type=int, help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()
    if args.memory:
        print(json.dumps(peak_memory(args.memory)))
        return
    torch.manual_seed(0)
    predict = generator()
    size = 1024 if args.quick else 2048
    image = torch.rand(1, size, size)
    tiles = tiles_of(image)
    tiled_s, bare_s = [], []
    bare(predict, tiles[:BATCH])  # warm-up: threads and allocator
    for _ in range(1 if args.quick else 5):  # interleaved
        started = time.perf_counter()
        predict_tiled(predict, image, TILE, OVERLAP, BATCH)
        tiled_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        bare(predict, tiles)
        bare_s.append(time.perf_counter() - started)
    overhead = median(tiled_s) / median(bare_s) - 1
    memory = []
    for side in (512, 1024) if args.quick else (1024, 2048, 4096):
        done = subprocess.run([sys.executable, __file__, "--memory", str(side)], cwd=ROOT, capture_output=True,
                              text=True, check=True)
        memory.append(json.loads(done.stdout.strip().splitlines()[-1]))
    working = [m["working_mb"] for m in memory]
    record = {"image": size, "tile": TILE, "overlap": OVERLAP, "batch": BATCH, "n_tiles": len(tiles),
              "tiled_s": tiled_s, "bare_s": bare_s, "overhead": overhead, "overhead_target": 0.10,
              "overhead_ok": overhead <= 0.10, "memory": memory,
              "working_memory_spread_mb": max(working) - min(working)}
    write_result("speed_inference", record,
                 f"tiled {size}^2 overhead {overhead:+.1%} (target <= 10%); working memory "
                 + ", ".join(f"{m['size']}^2: {m['working_mb']:.0f} MB" for m in memory)
                 + " (+ image-sized arrays " + ", ".join(f"{m['image_sized_arrays_mb']:.0f}" for m in memory) + " MB)")


if __name__ == "__main__":
    main()
