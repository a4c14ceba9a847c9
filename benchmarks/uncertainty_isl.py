"""Does the uncertainty map point at invented nuclei on a real field? The in-silico-labeling phase z-stack -> DAPI
field (../shared/data), the default virtual-labeling recipe trained for ``--epochs`` epochs of 64 generator steps
(a fixed number of steps, not a time budget), evaluated on the held-out region with test-time augmentation (the 8
flips and rotations, evaluate.py's default) and, on the same checkpoint, with Monte-Carlo dropout (16 passes with the
generator's dropout on, as pix2pix draws its noise).

Reports, for the relative uncertainty map (what evaluate.py writes) and the plain standard deviation (the old
definition), the ROC AUC for telling pixels of invented nuclei from pixels of found predicted nuclei; the
per-nucleus risk AUC, for each method; and the evaluation's verdict against the baselines.
Result: results/uncertainty_isl.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import ROOT, run, write_result
from real_data import train_and_evaluate, vl_fields

MC_SAMPLES = 16  # Monte-Carlo dropout passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of 512 crops (64 generator steps each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="two tiny epochs (a smoke run)")
    parser.add_argument("--work", type=Path, help="keep the training and evaluation runs here (default: a temporary "
                        "folder, removed at the end)")
    args = parser.parse_args()
    fields, description = vl_fields("isl")
    overrides = ["experiment=virtual_labeling", "data=paired_folders", *fields, "data.split.mode=regions",
                 "data.split.val_fraction=0.15", "data.split.test_fraction=0.25", "data.label_dir=null"]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        summary, evaluation = train_and_evaluate(overrides, work, "isl", args.epochs, args.quick, args.seed,
                                                 ("uncertainty.method=tta", "uncertainty.n_samples=8"))
        mc_dir = work / f"isl_{args.seed}_eval_mc_dropout"
        run([str(ROOT / "evaluate.py"), f"ckpt_path={summary['last_model_path']}", f"hydra.run.dir={mc_dir}",
             "uncertainty.method=mc_dropout", f"uncertainty.n_samples={MC_SAMPLES}", "report=markdown"], cwd=work)
        mc_dropout = json.loads((mc_dir / "summary.json").read_text())["nuclei"]
    nuclei = evaluation["nuclei"]
    separation = {name: nuclei["map_separation"][name] for name in ("uncertainty", "spread", "abs_error", "1-ssim")
                  if name in nuclei["map_separation"]}
    pooled = nuclei["pooled_over_images"]["model"]
    record = {"task": description, "epochs_set": args.epochs, "seed": args.seed,
              "generator_steps": summary["global_step"] // 2, "quick": args.quick,
              "epochs": summary["epochs"], "map_separation": separation, "risk_separation": nuclei["risk_separation"],
              "nuclei": {k: pooled[k] for k in ("tp", "hallucinated", "missed", "f1")},
              "mc_dropout": {"n_samples": MC_SAMPLES, "map_separation": {name: mc_dropout["map_separation"][name]
                                                                  for name in ("uncertainty", "spread")},
                             "risk_separation": mc_dropout["risk_separation"]},
              "verdict": evaluation["verdict"], "target_invented_auc": 0.75}
    invented = separation["uncertainty"].get("invented_auc")
    mc_invented = {name: mc_dropout["map_separation"][name]["invented_auc"] for name in ("uncertainty", "spread")}
    plain = separation.get("spread", {}).get("invented_auc")
    write_result("uncertainty_isl", record,
                 f"invented-nuclei pixel AUC: relative uncertainty {invented:.3f}, plain std {plain:.3f} "
                 f"(target >= 0.75); with MC dropout {mc_invented['uncertainty']:.3f} and {mc_invented['spread']:.3f}; "
                 f"risk AUC {nuclei['risk_separation']['roc_auc']:.3f}; {pooled['hallucinated']} "
                 f"invented, {pooled['tp']} found; {evaluation['verdict']['line']}")


if __name__ == "__main__":
    main()
