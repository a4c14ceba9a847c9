"""Several segmentation checkpoints evaluated as one model (``evaluate.py ckpt_path=[a.ckpt,b.ckpt]``): the maps
are the members' average, images and videos are decoded from it, and checkpoints that do not belong together are
refused."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from stainless.models.checkpoint import CheckpointError

SEGMENTER = ("experiment=rbc_segmentation", "backbone.encoder_weights=null", "data.synthetic.n_frames=6",
             "data.synthetic.n_labelme=4", "data.synthetic.size=64", "+data.synthetic.video_frames=3",
             "+data.synthetic.video_cells=2", "+data.synthetic.cells_per_frame=3", "data.patch_size=64",
             "data.batch_size=2", "test=false")


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two tiny `distance` segmenters trained with different seeds on the same data."""
    from conftest import tiny_train_config

    from stainless.train import train

    root = tmp_path_factory.mktemp("ensemble")
    found = {}
    for name, seed in (("a", 1), ("b", 2)):
        cfg = tiny_train_config(root, *SEGMENTER, f"seed={seed}", "model.instances=distance", run=name)
        with_data = cfg.paths.data_dir
        train(cfg)
        found[name] = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    found["videos"] = Path(with_data) / "synthetic_rbc" / "videos"
    return found


@pytest.mark.slow  # trains: left out of `make mutate`, run by `make test`
def test_an_ensemble_decodes_the_average_of_its_members_maps(members, cfg_eval):
    from stainless.evaluate import evaluate

    fixed = ("report=markdown", "baselines=false", "segmentation.tune=false", "segmentation.tta=1")
    a, b = (evaluate(cfg_eval(f"ckpt_path={members[k]}", *fixed, run=k)) for k in ("a", "b"))
    both = evaluate(cfg_eval(f"ckpt_path=[{members['a']},{members['b']}]", *fixed, run="both"))
    assert both["checkpoint"] == [str(members["a"].resolve()), str(members["b"].resolve())]
    assert both["instances"] == "distance" and both["n_images"] == a["n_images"] > 0
    names = sorted(p.name for p in (Path(both["output_dir"]) / "predictions").glob("*_probability.tif"))
    assert names
    for name in names + [n.replace("_probability", "_distance") for n in names]:
        one, other, mean = (tifffile.imread(Path(s["output_dir"]) / "predictions" / name) for s in (a, b, both))
        assert np.abs(one - other).max() > 1e-3  # the members differ, so the average is neither of them
        np.testing.assert_allclose(mean, (one + other) / 2, atol=1e-5)
    # the labels are decoded from the averaged maps, and the report names both checkpoints
    assert (Path(both["output_dir"]) / "predictions" / names[0].replace("_probability", "_labels")).is_file()
    report = (Path(both["output_dir"]) / "report.md").read_text()
    assert f"Checkpoint: `the average of 2: {members['a'].resolve()}, {members['b'].resolve()}`" in report
    # videos are segmented with the ensemble too
    videos = evaluate(cfg_eval(f"ckpt_path=[{members['a']},{members['b']}]", f"videos={{A:{members['videos'] / 'UREA.tif'}}}",
                               "frame_interval=2.0", "segmentation.overlay_video=false", run="video"))
    assert videos["checkpoint"] == both["checkpoint"] and (Path(videos["output_dir"]) / "cells.csv").is_file()


@pytest.mark.slow
def test_checkpoints_that_do_not_belong_together_are_refused(members, cfg_eval, tmp_path):
    from conftest import run_config_factory

    from stainless.evaluate import evaluate
    from stainless.export import export
    from stainless.utils.config import RUN_MARKERS

    def altered(name: str, change) -> Path:  # member b's weights under other settings (the same tensors load)
        checkpoint = torch.load(members["b"], weights_only=True)
        change(checkpoint)
        torch.save(checkpoint, tmp_path / name)
        return tmp_path / name

    boundary = altered("boundary.ckpt", lambda c: c["hyper_parameters"].update(instances="boundary"))
    cfg = cfg_eval(f"ckpt_path=[{members['a']},{boundary}]", run="mixed")
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(boundary))}: model.instances=boundary, but "
                                              rf"{re.escape(str(members['a']))} has distance; an ensemble's "
                                              "checkpoints must return the same maps$"):
        evaluate(cfg)
    assert not [m for m in RUN_MARKERS if (Path(cfg.paths.output_dir) / m).exists()]
    other = altered("other_channels.ckpt", lambda c: c["datamodule_hyper_parameters"].update(source_channels=[1]))
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(other))}: data.source_channels=\[1\], but "
                                              rf"{re.escape(str(members['a']))} has None; an ensemble's checkpoints "
                                              "must read their inputs the same way$"):
        evaluate(cfg_eval(f"ckpt_path=[{members['a']},{other}]", run="other"))
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(missing))}: checkpoint file does not exist"):
        evaluate(cfg_eval(f"ckpt_path=[{members['a']},{missing}]", run="missing"))
    with pytest.raises(CheckpointError, match=r"ckpt_path=\[\]: give a checkpoint"):
        evaluate(cfg_eval("ckpt_path=[]", run="empty"))
    with pytest.raises(CheckpointError, match=r"^5: checkpoint file does not exist$"):  # Hydra reads a number
        evaluate(cfg_eval("ckpt_path=5", run="number"))
    export_cfg = run_config_factory("export", tmp_path, "export")
    with pytest.raises(CheckpointError, match=r"export takes one checkpoint; an ensemble's maps are averaged by"):
        export(export_cfg(f"ckpt_path=[{members['a']},{members['b']}]", "format=onnx"))
