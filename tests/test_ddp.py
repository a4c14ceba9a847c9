"""Two CPU processes (gloo) through the real entry point: one run directory, files written once, metrics finite."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false",
       "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
       "print_config=false", "callbacks.progress_bar.refresh_rate=0"]
JOBS = {
    "virtual_labeling": ["data.synthetic.n_images=6", "data.synthetic.size=64", "data.patch_size=32",
                         "backbone.num_downs=5", "backbone.ngf=8", "model.discriminator.ndf=8"],
    "rbc_segmentation": ["experiment=rbc_segmentation", "data.synthetic.n_frames=6", "data.synthetic.n_labelme=6",
                         "data.synthetic.size=64", "+data.synthetic.video_frames=2", "+data.synthetic.video_cells=2",
                         "+data.synthetic.cells_per_frame=3", "data.patch_size=64"],
}


@pytest.mark.slow
@pytest.mark.parametrize("job", JOBS)
def test_two_process_ddp_on_cpu(tmp_path, job):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *DDP, *JOBS[job]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list((tmp_path / "outputs" / job / "runs").iterdir())
    assert len(runs) == 1  # the second process wrote into the first one's directory, not its own
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["global_step"] > 0 and (runs[0] / "checkpoints" / "last.ckpt").is_file()
    monitored = "val/ssim" if job == "virtual_labeling" else "val/iou"
    assert math.isfinite(summary["metrics"][monitored])
    assert len(list((runs[0] / "images").glob("epoch_*.png"))) == 1
    # two processes really ran, each on its own shard of the crops
    ranks = summary["distributed"]["ranks"]
    assert summary["distributed"]["world_size"] == 2 and sorted(r["rank"] for r in ranks) == [0, 1]
    assert all(r["training_samples"] > 0 for r in ranks)
    assert ranks[0]["first_batch_sum"] != ranks[1]["first_batch_sum"]
