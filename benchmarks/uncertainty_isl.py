"""Does the uncertainty map point at invented nuclei on real fields? The in-silico-labeling phase z-stack -> DAPI
field (../shared/data; the field the target is set on), and the HT29 and BBBC022 fields of ``real_data.py`` as
checks on other data: the default virtual-labeling recipe trained for ``--epochs`` epochs of 64 generator steps (a
fixed number of steps, not a time budget), evaluated on the held-out region with test-time augmentation (the 8 flips
and rotations, evaluate.py's default) and, on the same checkpoint, with Monte-Carlo dropout (16 passes with the
generator's dropout on, as pix2pix draws its noise).

Reports, per field and method, for the uncertainty map (evaluate.py's default ``uncertainty.map=objects``: 1 - mean
IoU of each predicted nucleus with the nuclei detected in each sample), the relative pixel spread
(``uncertainty.map=relative``) and the plain standard deviation, the ROC AUC for telling pixels of invented nuclei
from pixels of found predicted nuclei; the per-nucleus risk AUC; and the evaluation's verdict against the baselines.
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


def auc(where: dict, name: str) -> str:
    """A map's invented-nuclei AUC in a record, as text."""
    value = where["map_separation"].get(name, {}).get("invented_auc")
    return "n/a" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of 512 crops (64 generator steps each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fields", default="isl,ht29,bbbc022", help="comma-separated: isl, ht29, bbbc022")
    parser.add_argument("--quick", action="store_true", help="two tiny epochs (a smoke run)")
    parser.add_argument("--work", type=Path, help="keep the training and evaluation runs here (default: a temporary "
                        "folder, removed at the end)")
    args = parser.parse_args()
    names = args.fields.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        fields = {name: one_field(name, work, args.epochs, args.quick, args.seed) for name in names}
    record = {"epochs_set": args.epochs, "seed": args.seed, "quick": args.quick, "fields": fields,
              "target_field": "isl", "target_invented_auc": 0.75}
    parts = []
    for name, f in fields.items():
        parts.append(f"{name}: uncertainty {auc(f, 'uncertainty')} (MC dropout {auc(f['mc_dropout'], 'uncertainty')}), "
                     f"relative spread {auc(f, 'relative_spread')}, {f['nuclei']['hallucinated']} invented / "
                     f"{f['nuclei']['tp']} found")
    write_result("uncertainty_isl", record, "invented-nuclei pixel AUC (target >= 0.75 on isl): " + "; ".join(parts))


if __name__ == "__main__":
    main()
