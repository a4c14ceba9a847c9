"""Scoring a virtual-labeling checkpoint on images: pixel metrics and maps, hallucinated and missed nuclei,
uncertainty without ground truth, baselines, a report."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import torch
from omegaconf import DictConfig

from stainless.data.datamodule import MicroscopyDataModule
from stainless.data.datasets import load_sample
from stainless.data.samples import Sample
from stainless.evaluation.inputs import new_input_samples
from stainless.evaluation.nuclei import COLUMNS as NUCLEI_COLUMNS
from stainless.evaluation.nuclei import NucleiEvaluation, report_section, separation_maps
from stainless.evaluation.report import print_outcome, verdict, verdict_section, write_report
from stainless.inference.nuclei import NucleusDetector
from stainless.inference.tiling import predict_tiled
from stainless.inference.uncertainty import (
    UNCERTAINTY_MAPS,
    object_disagreement,
    sample_predictions,
    spread_map,
    uncertainty_map,
)
from stainless.io import image_dtype, pixel_size_of, to_dtype, write_tiff
from stainless.metrics.image import HIGHER_IS_BETTER, LPIPSScorer, image_maps, per_image_metrics
from stainless.metrics.nuclei import outline_nuclei, write_labels
from stainless.models.ensemble import checkpoint_label
from stainless.utils.logging import describe, save_config, write_json
from stainless.utils.visuals import colorize, grid, image_to_image_panels, to_rgb

METRICS = ("mse", "mae", "psnr", "ssim", "pearson", "lpips", *NUCLEI_COLUMNS)


def _train_target_mean(datamodule: MicroscopyDataModule, samples: dict[str, list[Sample]]) -> np.ndarray | None:
    """Per-channel mean of the normalised training targets (the constant-image baseline)."""
    train = samples.get("train") or []
    means = [
        load_sample(s, datamodule.hparams.normalization or {}, "image", datamodule.hparams.channel_axis).target.mean((1, 2))
        for s in train
        if s.target is not None
    ]
    return np.mean(means, axis=0) if means else None


def evaluate_images(cfg: DictConfig, module, data_hp: dict[str, Any], out_dir: Path, device: torch.device,
                    started: float) -> dict[str, Any]:
    """Score an image-to-image checkpoint on ``input=`` images or its ``cfg.stage`` split; see
    :func:`stainless.evaluate.evaluate` for the files written."""
    map_kind = cfg.uncertainty.get("map", "objects")
    if map_kind not in UNCERTAINTY_MAPS:
        raise ValueError(f"uncertainty.map={map_kind!r}: use {' or '.join(UNCERTAINTY_MAPS)}")
    datamodule = MicroscopyDataModule(**data_hp)
    if cfg.input:
        samples = new_input_samples(cfg, data_hp, module)
        split: dict[str, list[Sample]] = {}
    else:
        datamodule.prepare_data()
        split = datamodule.find_samples()
        samples = split[cfg.stage]
        if not samples:
            raise ValueError(f"stage={cfg.stage}: the checkpoint's data has no {cfg.stage} images; pass input=PATH")
    # written once the inputs passed their checks: an evaluation refused at the start leaves a reusable directory
    save_config(cfg, out_dir / "config_resolved.yaml")
    lpips = LPIPSScorer(cfg.metrics.lpips_net, cfg.metrics.lpips_trunk, cfg.metrics.lpips)
    tile = cfg.tile_size or 2 * data_hp["patch_size"]
    normalization = data_hp.get("normalization") or {}
    constant = _train_target_mean(datamodule, split) if cfg.baselines and split else None

    by_objects = cfg.uncertainty.method != "none" and map_kind == "objects"
    detector = NucleusDetector.from_config(cfg.detector).to(device) if cfg.nuclei.enabled or by_objects else None
    nuclei = NucleiEvaluation(detector, cfg.nuclei.use_labels) if cfg.nuclei.enabled else None
    predict = lambda batch: module(batch).clamp(0, 1)

    rows: list[dict[str, Any]] = []
    figures: list[dict[str, Any]] = []
    for sample in samples:
        loaded = load_sample(sample, normalization, "image", data_hp.get("channel_axis", "auto"))
        source = torch.from_numpy(loaded.source).to(device)
        draws = None
        if cfg.uncertainty.method != "none":
            draws = sample_predictions(predict, module, source, cfg.uncertainty.method, cfg.uncertainty.n_samples, tile,
                                       cfg.tile_overlap, cfg.batch_size, module.size_multiple, cfg.uncertainty.seed).cpu()
        # the first test-time augmentation is the identity: that draw is the prediction itself
        pred = (draws[0] if cfg.uncertainty.method == "tta" else
                predict_tiled(predict, source, tile, cfg.tile_overlap, cfg.batch_size, module.size_multiple).cpu())[None]
        pred_np = pred[0].numpy()
        dtype = image_dtype(sample.source) if cfg.output_dtype == "input" else np.float32
        size = pixel_size_of(sample.source, cfg.pixel_size)  # the predictions carry the input's pixel size
        write_tiff(out_dir / "predictions" / f"{sample.name}.tif", to_dtype(pred_np, dtype), size)
        panels: dict[str, torch.Tensor] = {"input": to_rgb(source[None]), "prediction": to_rgb(pred)}
        found = detector(pred_np) if detector is not None else None  # the predicted nuclei
        uncertainty = spread = risks = None
        extra_maps: dict[str, np.ndarray] = {}
        if draws is not None:
            relative, spread = uncertainty_map(draws).numpy(), spread_map(draws).numpy()
            uncertainty = relative
            if by_objects:
                uncertainty, risks = object_disagreement(draws, found, detector)
                extra_maps["relative_spread"] = relative  # the spread map, scored beside it for comparison
            write_tiff(out_dir / "maps" / f"{sample.name}_uncertainty.tif", uncertainty.astype(np.float32), size)
            panels["uncertainty"] = colorize(torch.from_numpy(uncertainty)[None, None], "cividis", 0.0,
                                             1.0 if by_objects else 0.5)
            iio.imwrite(out_dir / "maps" / f"{sample.name}_uncertainty.png", grid({"u": panels["uncertainty"]}, pad=0))
        target_np = loaded.target
        true = nuclei.truth(target_np, loaded.labels) if nuclei is not None else None
        row: dict[str, Any] = {"image": sample.name, "method": "model"}
        score = None
        if true is not None:
            nuclei_row, _, score = nuclei.score("model", pred_np, true, found)
            row.update(nuclei_row)
            write_labels(out_dir / "nuclei" / f"{sample.name}_true.tif", true)
        if nuclei is not None:
            write_labels(out_dir / "nuclei" / f"{sample.name}_predicted.tif", found)
        if target_np is None:
            rows.append(row)
            if nuclei is not None:
                nuclei.add_model_image(sample.name, pred_np, found, None, None, {}, uncertainty, size, spread, risks)
            figures.append({"name": sample.name, "panels": panels})
            continue
        target = torch.from_numpy(target_np)[None]
        rows.append({**row, **per_image_metrics(pred, target, lpips)[0]})
        maps = image_maps(pred, target, lpips)
        for name, value in maps.items():
            write_tiff(out_dir / "maps" / f"{sample.name}_{name}.tif", value[0, 0].numpy().astype(np.float32), size)
        panels = image_to_image_panels(source[None].cpu(), pred, target, maps) | {
            k: v for k, v in panels.items() if k == "uncertainty"}
        if score is not None:
            panels["nuclei"] = outline_nuclei(pred[0], true, found, score)[None]
            nuclei.add_model_image(sample.name, pred_np, found, true, score, separation_maps(maps) | extra_maps,
                                   uncertainty, size, spread, risks)
        for name in ("abs_error", "1-ssim", "lpips", "nuclei"):
            if name in panels:
                iio.imwrite(out_dir / "maps" / f"{sample.name}_{name}.png", grid({name: panels[name]}, pad=0))
        figures.append({"name": sample.name, "panels": panels})
        if cfg.baselines:
            source01 = torch.from_numpy(loaded.source)[None]
            rescaled = source01.mean(1, keepdim=True).expand_as(target) if source01.shape[1] != target.shape[1] else source01
            level = torch.as_tensor(constant if constant is not None else target_np.mean((1, 2)), dtype=torch.float32)
            flat = level.view(1, -1, 1, 1).expand_as(target).contiguous()
            for method, image in (("baseline_input", rescaled), ("baseline_mean", flat)):
                row = {"image": sample.name, "method": method, **per_image_metrics(image, target, lpips)[0]}
                if true is not None:
                    row.update(nuclei.score(method, image[0].numpy(), true)[0])
                rows.append(row)

    methods = list(dict.fromkeys(r["method"] for r in rows))
    columns = ["image", "method", *[m for m in METRICS if any(m in r for r in rows)]]
    with open(out_dir / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "checkpoint": checkpoint_label(cfg.ckpt_path),
        "output_dir": str(out_dir),
        "input": str(cfg.input) if cfg.input else f"{cfg.stage} split of the checkpoint's data",
        "n_images": len(samples),
        "tile_size": tile,
        "lpips": "computed" if lpips.available else "skipped: trunk weights not on this machine",
        "constant_baseline": "mean of the training targets" if constant is not None else "mean of each target",
        "metrics": {m: {n: describe([r[n] for r in rows if r["method"] == m and n in r])
                        for n in METRICS if any(n in r for r in rows if r["method"] == m)} for m in methods},
        "higher_is_better": {k: v for k, v in HIGHER_IS_BETTER.items()},
        "uncertainty": dict(cfg.uncertainty),
    }
    if nuclei is not None:
        nuclei.write_table(out_dir / "nuclei.csv")
        summary["nuclei"] = nuclei.summary()
    judged = verdict(summary["metrics"])
    summary["verdict"] = {k: judged[k] for k in ("line", "losses", "beats_all")}
    summary["duration_s"] = round(time.time() - started, 1)
    write_json(out_dir / "summary.json", summary)
    sections = [verdict_section(judged)] + ([report_section(summary)] if "nuclei" in summary else [])
    report = write_report(out_dir, summary, rows, figures[: cfg.max_report_images], cfg.report, sections=sections)
    print_outcome(judged, out_dir, report)
    return summary
