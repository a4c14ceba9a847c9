"""Scale out, sweep and compare: multirun, launchers, Optuna, W&B offline records, DDP/multi-node metrics,
deterministic reruns and resume equivalence."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from stainless import metric_direction
from stainless.evaluation.compare import compare_runs, find_runs
from stainless.evaluation.compare import main as compare_main
from stainless.models.checkpoint import load_checkpoint
from stainless.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "test=false",
        "data.synthetic.n_images=6", "data.synthetic.size=64", "data.patch_size=32", "backbone.num_downs=5",
        "backbone.ngf=8", "model.discriminator.ndf=8", "print_config=false", "callbacks.progress_bar.refresh_rate=0"]


def _run(*args, cwd, timeout=300, command=("train.py",)):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, str(ROOT / command[0])] if command == ("train.py",) else list(command)
    done = subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def wandb_records(run_dir: Path):
    """The records of a W&B offline run file (``run-<id>.wandb``).

    wandb 0.31 has no Python reader for its own transaction log (it moved to wandb-core), so this test helper
    reads the LevelDB-style log: a 7-byte ``:W&B`` header, then 32 KiB blocks of chunks, each with a 7-byte header
    (CRC, length, type: 1 full, 2 first, 3 middle, 4 last); whole chunks are protobuf ``Record`` messages.
    """
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, block, pending = 7, 32768, b""
    while position + 7 <= len(data):
        if block - position % block < 7:
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if length == 0 and kind == 0:  # zero padding at the end of a block
            position += block - position % block
            continue
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_multirun_logs_one_wandb_group_and_compare_tabulates_the_runs(tmp_path, capsys):
    _run("-m", "model.lr=1e-4,2e-4", "logger=wandb", *TINY, cwd=tmp_path)
    (sweep,) = (tmp_path / "outputs" / "virtual_labeling" / "multiruns").iterdir()
    runs = find_runs([sweep])
    assert [r.name for r in runs] == ["0", "1"]
    lrs = sorted(yaml.safe_load((r / "config_resolved.yaml").read_text())["model"]["lr"] for r in runs)
    assert lrs == [1e-4, 2e-4]

    # W&B, read back from the offline run files: one group for the sweep, tags, flat config, captioned images
    for run in runs:
        records = list(wandb_records(run))
        (run_record,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert run_record.run_group == f"virtual_labeling-{sweep.name}"
        assert set(run_record.tags) == {"virtual_labeling", "pix2pix"}
        config_keys = {i.key for r in records if r.WhichOneof("record_type") == "config" for i in r.config.update}
        assert {"model/lr", "data/batch_size", "loss/l1_weight"} <= config_keys
        history = {i.key or "/".join(i.nested_key): i.value_json for r in records
                   if r.WhichOneof("record_type") == "history" for i in r.history.item}
        captions = next(v for k, v in history.items() if k.endswith("captions"))
        assert "prediction" in captions and "abs_error" in captions
        assert list(run.glob("wandb/offline-run-*/files/media/images/val/*.png"))

    # the comparison command: differing settings, final and best metrics, checkpoint; also as CSV
    table = compare_main([str(sweep)])
    printed = capsys.readouterr().out
    assert "model.lr" in table.columns and sorted(table["model.lr"]) == [1e-4, 2e-4]
    assert {"final val/ssim", "best val/ssim", "checkpoint"} <= set(table.columns)
    assert "data.batch_size" not in table.columns  # equal in both runs: not a difference
    assert all(Path(c).is_file() for c in table["checkpoint"])
    assert table["best val/ssim"].is_monotonic_decreasing  # best run first (ssim: higher is better)
    assert "model.lr" in printed and (sweep / "comparison.csv").read_text().count("\n") == 3
    # single run directories can be compared as well
    assert len(compare_runs(find_runs([runs[0], runs[1]]))) == 2


def test_joblib_launcher_runs_in_parallel_processes(tmp_path):
    _run("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2", *TINY, cwd=tmp_path)
    (sweep,) = (tmp_path / "outputs" / "virtual_labeling" / "multiruns").iterdir()
    seeds = sorted(yaml.safe_load((r / "config_resolved.yaml").read_text())["seed"] for r in find_runs([sweep]))
    assert seeds == [1, 2]


def test_optuna_sweep_through_the_submitit_launcher(tmp_path):
    _run("-m", "hparams_search=virtual_labeling_optuna", "hydra.sweeper.n_trials=2",
         "hydra.sweeper.sampler.n_startup_trials=2", "hydra/launcher=submitit_local", *TINY, cwd=tmp_path)
    (sweep,) = (tmp_path / "outputs" / "virtual_labeling" / "multiruns").iterdir()
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    runs = find_runs([sweep])
    assert len(runs) == 2 and (sweep / ".submitit").is_dir()
    best = [json.loads((r / "summary.json").read_text())["metrics"]["val/ssim_best"] for r in runs]
    assert results["best_value"] == pytest.approx(max(best))  # maximised: ssim is better higher
    # backbone.ngf is fixed by the command line (TINY), so Optuna searches the other four
    assert set(results["best_params"]) == {"model.lr", "loss.l1_weight", "loss.adversarial", "augmentation"}


def test_sweep_direction_follows_the_metric(cfg_train):
    assert metric_direction("val/ssim_best") == "maximize" and metric_direction("val/nuclei_f1_best") == "maximize"
    assert metric_direction("val/mse_best") == "minimize" and metric_direction("val/hallucinated_best") == "minimize"
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for search, metric, direction in (("virtual_labeling_optuna", "val/lpips_best", "minimize"),
                                          ("rbc_segmentation_optuna", "val/iou_best", "maximize")):
            cfg = compose("train", [f"hparams_search={search}", f"optimized_metric={metric}"], return_hydra_config=True)
            assert cfg.hydra.sweeper.direction == direction


DDP_CPU = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false"]
JOBS = {  # the same networks and data in the test process (conftest's tiny settings) and the DDP subprocess
    "virtual_labeling": ["data.synthetic.n_images=6", "backbone.num_downs=5", "backbone.ngf=8",
                         "model.discriminator.ndf=8", "model.discriminator.n_layers=2"],
    "rbc_segmentation": ["experiment=rbc_segmentation", "data.synthetic.n_frames=8", "data.synthetic.n_labelme=8",
                         "+data.synthetic.video_frames=2", "+data.synthetic.video_cells=2"],
}
SHARED = ["data.synthetic.size=64", "data.patch_size=32", "data.batch_size=4", "print_config=false",
          "callbacks.progress_bar.refresh_rate=0"]


@pytest.mark.slow
@pytest.mark.parametrize("job", JOBS)
def test_two_process_validation_matches_one_process(cfg_train, tmp_path, job):
    """Metrics are reduced across processes: scoring one checkpoint with 2 DDP processes gives the 1-process
    numbers. Tolerance 1e-5 (float32 sums in another order); the validation set has an even number of tiles so
    no sample is duplicated by the distributed sampler. The segmenter's val/loss is left out: its Jaccard term
    is computed over each batch, and the batches differ between 1 and 2 processes."""
    cfg = cfg_train(*JOBS[job], "test=false", run="trained")
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    single = train(cfg_train(*JOBS[job], "validate_only=true", f"ckpt_path={ckpt}", "trainer.limit_val_batches=null",
                             run="one"))
    _run(*JOBS[job], *SHARED, *DDP_CPU, "validate_only=true", f"ckpt_path={ckpt}", f"paths.data_dir={cfg.paths.data_dir}",
         f"hydra.run.dir={tmp_path / 'two'}", cwd=tmp_path, timeout=600)
    double = json.loads((tmp_path / "two" / "summary.json").read_text())["metrics"]
    compared = [k for k in single if k.startswith(("val/", "val_field/")) and not k.endswith("_best") and k != "val/loss"]
    assert len(compared) >= (12 if job == "virtual_labeling" else 5)  # pix2pix: tiles and whole fields
    for key in compared:
        assert double[key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), key


@pytest.mark.slow
def test_multinode_with_torchrun(tmp_path):
    """Two 'nodes' of one CPU process each, started by two torchrun agents as on two machines."""
    args = [*TINY, "trainer.limit_train_batches=2", "trainer=multinode", "trainer.num_nodes=2", "trainer.devices=1",
            "trainer.accelerator=cpu", "trainer.sync_batchnorm=false", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
                               f"--node-rank={rank}", "--master-addr=127.0.0.1", "--master-port=29517",
                               str(ROOT / "train.py"), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert all(node.returncode == 0 for node in nodes), outputs[0][-2000:] + outputs[1][-2000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # two processes of 2 batches each, two optimiser steps (G and D) per batch, counted once per process
    assert summary["global_step"] == 4 and load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")


def _final(metrics):
    return {k: v for k, v in metrics.items() if k.startswith("val/")}


def test_deterministic_reruns_give_identical_metrics(cfg_train):
    runs = [train(cfg_train("trainer.deterministic=true", "trainer.max_epochs=2", "test=false", run=f"r{i}"))
            for i in range(2)]
    assert _final(runs[0]) == _final(runs[1])
    assert len(_final(runs[0])) > 5


@pytest.mark.parametrize("sanity_steps", [0, 1])
def test_resume_gives_the_metrics_of_an_uninterrupted_run(cfg_train, sanity_steps):
    """Resuming from last.ckpt continues weights, optimisers, loop state and random states: the final metrics
    of 1 epoch + 1 resumed epoch equal those of 2 epochs straight (tolerance 1e-6: the same arithmetic)."""
    common = ["trainer.deterministic=true", "test=false", "trainer.limit_train_batches=3", "model.lr_schedule=null",
              f"trainer.num_sanity_val_steps={sanity_steps}"]
    straight_cfg = cfg_train(*common, "trainer.max_epochs=2", run="straight")
    straight = train(straight_cfg)
    first = cfg_train(*common, "trainer.max_epochs=1", run="first")
    train(first)
    resumed_cfg = cfg_train(*common, "trainer.max_epochs=2", f"ckpt_path={first.paths.output_dir}", run="resumed")
    resumed = train(resumed_cfg)
    for key, value in _final(straight).items():
        if not key.endswith("_best"):
            assert resumed[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    a = load_checkpoint(Path(straight_cfg.paths.output_dir) / "checkpoints" / "last.ckpt")["state_dict"]
    b = load_checkpoint(Path(resumed_cfg.paths.output_dir) / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_resuming_continues_the_same_wandb_run(cfg_train):
    first = cfg_train("logger=wandb", "logger.wandb.offline=true", "test=false", run="first")
    train(first)
    (first_file,) = Path(first.paths.output_dir).glob("wandb/offline-run-*/run-*.wandb")
    run_id = first_file.stem.removeprefix("run-")
    assert load_checkpoint(Path(first.paths.output_dir) / "checkpoints" / "last.ckpt")["stainless"]["wandb_run_id"] == run_id
    resumed = cfg_train("logger=wandb", "logger.wandb.offline=true", "test=false", "trainer.max_epochs=2",
                        f"ckpt_path={first.paths.output_dir}", run="resumed")
    train(resumed)
    (resumed_file,) = Path(resumed.paths.output_dir).glob("wandb/offline-run-*/run-*.wandb")
    assert resumed_file.stem == first_file.stem  # `wandb sync` appends it to the same run
