"""Instance heads on real annotated cells: ``model.instances`` none vs boundary vs distance.

Each head is trained on the same data for the same number of optimiser steps (not a time budget: the figures do not
depend on how busy the machine was), once per seed, and scored by ``evaluate.py`` on the held-out images: pixel IoU,
object F1 at IoU 0.5 (pooled over the test images) and mean AP over IoU 0.5:0.95 (the DSB 2018 definition). The
Otsu baseline is split into cells exactly like the ``none`` model's mask (a distance watershed with the same sizes).

Data (read where they lie, ``../shared/data``): ``dsb2018`` (DSB 2018 stage-1 subset, split by image) and
``usiigaci`` (phase-contrast fields with whole-cell labels, split into regions); see ``real_data.py``.

Run from the repository root: ``.venv/bin/python benchmarks/instance_heads.py [--epochs 5] [--seeds 0,1,2]
[--only dsb2018,usiigaci] [--modes none,boundary,distance] [--tta N] [--set KEY=VALUE ...] [--eval-set KEY=VALUE ...]
[--ensemble] [--work DIR] [--record NAME]``
(``--work`` keeps the training runs and reuses those trained with the same ``--epochs``, ``--samples-per-epoch`` and
``--set``: a change of decoding is re-scored without retraining; ``--record instance_heads_long`` keeps a longer run
beside the default record; ``--set`` adds training overrides, e.g. ``--set data.patch_size=256``, and ``--eval-set``
evaluation overrides, e.g. ``--eval-set segmentation.seeds=hmaxima``, both recorded with the results; ``--ensemble``
also scores each mode's seeds as one model, their maps averaged)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, mean_sd, run, write_result
from real_data import segmentation_data

MODES = ("none", "boundary", "distance")


def train_and_score(name: str, mode: str, seed: int, epochs: int, samples: int, root: Path, tta: int | None = None,
                    overrides: tuple[str, ...] = (), eval_overrides: tuple[str, ...] = ()) -> dict:
    run_dir, eval_dir = root / f"{name}_{mode}_{seed}_train", root / f"{name}_{mode}_{seed}_eval"
    # what the run is trained with, kept beside it: a run kept by --work is reused only for the same training
    settings = {"epochs": epochs, "samples_per_epoch": samples, "train_overrides": list(overrides)}
    kept = run_dir / "benchmark_settings.json"
    if ((run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "summary.json").is_file()
            and kept.is_file() and json.loads(kept.read_text()) == settings):
        print(f"{name} {mode} seed {seed}: reusing the training run in {run_dir}", flush=True)  # --work kept it
    else:
        if run_dir.exists():  # trained otherwise (or unfinished): retrain rather than score it under these settings
            print(f"{name} {mode} seed {seed}: {run_dir} was not trained with {settings}; training again", flush=True)
            shutil.rmtree(run_dir)
        train(name, mode, seed, epochs, samples, run_dir, root, overrides)
        kept.write_text(json.dumps(settings))
    summary = json.loads((run_dir / "summary.json").read_text())
    evaluation = evaluate_checkpoints([run_dir / "checkpoints" / "last.ckpt"], eval_dir, root, tta, eval_overrides)
    return scores_of(name, mode, f"seed {seed}", summary, evaluation)


def evaluate_checkpoints(checkpoints: list[Path], eval_dir: Path, root: Path, tta: int | None,
                         eval_overrides: tuple[str, ...]) -> dict:
    """``evaluate.py``'s summary of one checkpoint, or of several as an ensemble (their maps averaged)."""
    shutil.rmtree(eval_dir, ignore_errors=True)
    ckpt = str(checkpoints[0]) if len(checkpoints) == 1 else "[" + ",".join(map(str, checkpoints)) + "]"
    run([str(ROOT / "evaluate.py"), f"ckpt_path={ckpt}", f"hydra.run.dir={eval_dir}", "report=markdown",
         *([f"segmentation.tta={tta}"] if tta else []), *eval_overrides], cwd=root)
    return json.loads((eval_dir / "summary.json").read_text())


def score_ensemble(name: str, mode: str, seeds: list[int], root: Path, tta: int | None,
                   eval_overrides: tuple[str, ...]) -> dict:
    """The seeds' checkpoints evaluated as one model (``ckpt_path=[...]``); steps and training time summed."""
    runs = [root / f"{name}_{mode}_{seed}_train" for seed in seeds]
    evaluation = evaluate_checkpoints([r / "checkpoints" / "last.ckpt" for r in runs], root / f"{name}_{mode}_ensemble_eval",
                                      root, tta, eval_overrides)
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    combined = {"global_step": sum(s["global_step"] for s in summaries),
                "duration_s": round(sum(s["duration_s"] for s in summaries), 1)}
    return scores_of(name, mode, f"ensemble of seeds {seeds}", combined, evaluation)


def train(name: str, mode: str, seed: int, epochs: int, samples: int, run_dir: Path, root: Path,
          overrides: tuple[str, ...] = ()) -> None:
    run([str(ROOT / "train.py"), "experiment=rbc_segmentation", "data=masks", "data.mask_mode=instances",
         *segmentation_data(name), f"model.instances={mode}", f"seed={seed}", f"trainer.max_epochs={epochs}",
         f"data.samples_per_epoch={samples}", "test=false", "callbacks.early_stopping=null",
         "callbacks.progress_bar.refresh_rate=0", "print_config=false", "logger=csv", *overrides,
         f"hydra.run.dir={run_dir}"], cwd=root)


def scores_of(name: str, mode: str, label: str, summary: dict, evaluation: dict) -> dict:
    scores = {"pixel_iou": evaluation["metrics"]["model"]["iou"]["mean"],
              "object_f1_iou50": evaluation["objects_by_iou"]["0.5"]["f1"],
              "mean_ap_50_95": evaluation["mean_ap_50_95"],
              "n_true": evaluation["objects_by_iou"]["0.5"]["tp"] + evaluation["objects_by_iou"]["0.5"]["fn"],
              "n_pred": evaluation["objects_by_iou"]["0.5"]["tp"] + evaluation["objects_by_iou"]["0.5"]["fp"],
              "steps": summary["global_step"], "train_s": summary["duration_s"],
              "object_sizes": {k: evaluation["object_sizes"][k] for k in ("diameter", "min_size", "min_distance")},
              "tta": evaluation["object_sizes"].get("tta", 1),  # flips/rotations each field's maps were averaged over
              # the split of touching objects tuned on the annotated fields (segmentation.tune, tune_on); fraction:
              # min_distance as that fraction of each image's own diameter
              "split": {k: evaluation["object_sizes"]["split"].get(k)
                        for k in ("key", "value", "fraction", "f1", "default_f1")},
              "seeds": evaluation["object_sizes"].get("seeds", "threshold"),  # the seed rule of an instance head
              # what became of foreground no seed reaches; with unseeded=auto, each rule's object F1 on validation
              "unseeded": evaluation["object_sizes"].get("unseeded"),
              "unseeded_f1": evaluation["object_sizes"]["split"].get("unseeded_f1"),
              "object_errors": evaluation.get("object_errors")}  # why cells are unmatched at IoU 0.5 (test images)
    otsu = evaluation["metrics"].get("baseline_otsu")
    if otsu:
        scores["baseline_otsu"] = {"pixel_iou": otsu["iou"]["mean"], "object_f1_mean_over_images": otsu["object_f1"]["mean"]}
    print(f"{name} {mode} {label}: IoU {scores['pixel_iou']:.3f} F1 {scores['object_f1_iou50']:.3f} "
          f"AP {scores['mean_ap_50_95']:.3f} ({scores['n_pred']} predicted / {scores['n_true']} true; "
          f"{scores['split']['key']} {scores['split']['value']}"
          + (f", unseeded {scores['unseeded']}" if mode != "none" else "") + ")"
          + (" unmatched: " + ", ".join(f"{k} {v}" for k, v in scores["object_errors"].items() if v)
             if scores["object_errors"] else ""), flush=True)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples-per-epoch", type=int, default=512)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", default="dsb2018,usiigaci")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--work", default=None, help="keep the training runs here and reuse them (re-evaluating only)")
    parser.add_argument("--tta", type=int, default=None,
                        help="segmentation.tta of the evaluation (default: evaluate.py's); with --work, re-scores only")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a training override added to every run (repeatable), e.g. data.patch_size=256")
    parser.add_argument("--eval-set", action="append", default=[], metavar="KEY=VALUE",
                        help="an evaluate.py override (repeatable), e.g. segmentation.seeds=hmaxima; with --work, "
                             "re-scores only")
    parser.add_argument("--ensemble", action="store_true",
                        help="also score each mode's seeds as one model, their maps averaged (evaluate.py ckpt_path=[...])")
    parser.add_argument("--record", default="instance_heads",
                        help="results/<record>.json (e.g. instance_heads_long for a longer run beside the default one)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    # the fields the split is tuned on (segmentation.tune_on; evaluate.py's default unless given)
    tune_on = next((o.split("=", 1)[1] for o in args.eval_set if o.startswith("segmentation.tune_on=")), "train+val")
    results: dict = {"epochs": args.epochs, "samples_per_epoch": args.samples_per_epoch, "seeds": seeds,
                     "tta": args.tta, "train_overrides": args.set, "eval_overrides": args.eval_set,
                     "tune_on": tune_on, "sets": {}}
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.only.split(","):
            runs = {mode: [train_and_score(name, mode, seed, args.epochs, args.samples_per_epoch, work, args.tta,
                                           tuple(args.set), tuple(args.eval_set))
                           for seed in seeds] for mode in args.modes.split(",")}
            table = {mode: {key: {**mean_sd(r[key] for r in rs), "values": [r[key] for r in rs]}
                            for key in ("pixel_iou", "object_f1_iou50", "mean_ap_50_95")}
                     for mode, rs in runs.items()}
            best = max(table, key=lambda m: table[m]["mean_ap_50_95"]["mean"])
            results["sets"][name] = {"table": table, "runs": runs, "best_by_mean_ap": best}
            if args.ensemble and len(seeds) > 1:
                ensembles = {mode: score_ensemble(name, mode, seeds, work, args.tta, tuple(args.eval_set))
                             for mode in runs}
                results["sets"][name]["ensemble"] = ensembles
                lines.append(f"{name} ensembles: " + ", ".join(
                    f"{m} F1 {e['object_f1_iou50']:.3f} AP {e['mean_ap_50_95']:.3f}" for m, e in ensembles.items()))
            lines.append(f"{name}: " + ", ".join(
                f"{m} F1 {t['object_f1_iou50']['mean']:.3f}±{t['object_f1_iou50']['sd']:.3f} "
                f"AP {t['mean_ap_50_95']['mean']:.3f}" for m, t in table.items()))
    write_result(args.record, results, "; ".join(lines))


if __name__ == "__main__":
    main()
