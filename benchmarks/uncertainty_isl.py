"""Does the uncertainty map point at invented nuclei on real fields? The in-silico-labeling phase z-stack -> DAPI
field (../shared/data; the field the target is set on), and the HT29 and BBBC022 fields of ``real_data.py`` as
checks on other data: the default virtual-labeling recipe trained for ``--epochs`` epochs of 64 generator steps (a
fixed number of steps, not a time budget), evaluated on the held-out region with test-time augmentation (the 8 flips
and rotations, evaluate.py's default) and, on the same checkpoint, with Monte-Carlo dropout (16 passes with the
generator's dropout on, as pix2pix draws its noise).

Trained once per seed (``--seeds``, default 0, 1, 2). Reports, per field, seed and method, for the uncertainty map (evaluate.py's default ``uncertainty.map=objects``: 1 - mean
IoU of each predicted nucleus with the nuclei detected in each sample), the relative pixel spread
(``uncertainty.map=relative``) and the plain standard deviation, the ROC AUC for telling pixels of invented nuclei
from pixels of found predicted nuclei; the per-nucleus risk AUC; the evaluation's verdict against the baselines; and
mean +- sd of the AUCs over the seeds.
Result: results/uncertainty_isl.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import ROOT, mean_sd, run, write_result
from real_data import train_and_evaluate, vl_fields

MC_SAMPLES = 16  # Monte-Carlo dropout passes
MAPS = ("uncertainty", "relative_spread", "spread", "abs_error", "1-ssim")  # as evaluate.py names them


def one_field(name: str, work: Path, epochs: int, quick: bool, seed: int) -> dict:
    """Train on one field, evaluate with TTA and with MC dropout: that field's record."""
    fields, description = vl_fields(name)
    overrides = ["experiment=virtual_labeling", "data=paired_folders", *fields, "data.split.mode=regions",
                 "data.split.val_fraction=0.15", "data.split.test_fraction=0.25", "data.label_dir=null"]
    summary, evaluation = train_and_evaluate(overrides, work, name, epochs, quick, seed,
                                             ("uncertainty.method=tta", "uncertainty.n_samples=8"))
    mc_dir = work / f"{name}_{seed}_eval_mc_dropout"
    run([str(ROOT / "evaluate.py"), f"ckpt_path={summary['last_model_path']}", f"hydra.run.dir={mc_dir}",
         "uncertainty.method=mc_dropout", f"uncertainty.n_samples={MC_SAMPLES}", "report=markdown"], cwd=work)
    mc_dropout = json.loads((mc_dir / "summary.json").read_text())["nuclei"]
    nuclei = evaluation["nuclei"]
    pooled = nuclei["pooled_over_images"]["model"]
    return {"task": description, "generator_steps": summary["global_step"] // 2, "epochs": summary["epochs"],
            "map_separation": {m: nuclei["map_separation"][m] for m in MAPS if m in nuclei["map_separation"]},
            "risk_separation": nuclei["risk_separation"],
            "nuclei": {k: pooled[k] for k in ("tp", "hallucinated", "missed", "f1")},
            "mc_dropout": {"n_samples": MC_SAMPLES,
                           "map_separation": {m: mc_dropout["map_separation"][m] for m in MAPS[:3]
                                              if m in mc_dropout["map_separation"]},
                           "risk_separation": mc_dropout["risk_separation"]},
            "verdict": evaluation["verdict"]}


def over_seeds(runs: dict[int, dict]) -> dict[str, dict]:
    """Mean and sd over the seeds of each map's invented-nuclei AUC (``tta/<map>``, ``mc_dropout/<map>``) and of the
    risk AUC, with the runs beside them; a seed without both invented and found nuclei has no AUC and is left out."""
    values: dict[str, list[float]] = {}
    for r in runs.values():
        for method, where in (("tta", r), ("mc_dropout", r["mc_dropout"])):
            for m, v in where["map_separation"].items():
                values.setdefault(f"{method}/{m}", []).append(v.get("invented_auc"))
            values.setdefault(f"{method}/risk", []).append(where["risk_separation"]["roc_auc"])
    return {key: {**mean_sd(x for x in v if x is not None), "runs": v} for key, v in values.items()
            if any(x is not None for x in v)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of 512 crops (64 generator steps each)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--fields", default="isl,ht29,bbbc022", help="comma-separated: isl, ht29, bbbc022")
    parser.add_argument("--quick", action="store_true", help="two tiny epochs (a smoke run)")
    parser.add_argument("--work", type=Path, help="keep the training and evaluation runs here (default: a temporary "
                        "folder, removed at the end)")
    args = parser.parse_args()
    names, seeds = args.fields.split(","), [int(s) for s in args.seeds.split(",")]
    fields = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in names:
            runs = {seed: one_field(name, work, args.epochs, args.quick, seed) for seed in seeds}
            fields[name] = {"task": runs[seeds[0]]["task"], "runs": runs, "over_seeds": over_seeds(runs)}
    record = {"epochs_set": args.epochs, "seeds": seeds, "quick": args.quick, "fields": fields,
              "target_field": "isl", "target_invented_auc": 0.75}
    parts = []
    for name, f in fields.items():
        stats = f["over_seeds"]
        text = lambda key: (f"{stats[key]['mean']:.3f} ± {stats[key]['sd']:.3f}" if key in stats  # noqa: E731
                            else "n/a")
        parts.append(f"{name}: uncertainty {text('tta/uncertainty')} (MC dropout {text('mc_dropout/uncertainty')}), "
                     f"relative spread {text('tta/relative_spread')}")
    write_result("uncertainty_isl", record, f"invented-nuclei pixel AUC over seeds {seeds} (target >= 0.75 on isl): "
                 + "; ".join(parts))

if __name__ == "__main__":
    main()
