"""The evaluation report: metric table, what each metric means, and a figure grid per image."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import imageio.v3 as iio
from lightning.pytorch.utilities import rank_zero_info

from stainless.utils.visuals import grid

EXPLANATIONS = {
    "mse": "Mean squared error of intensities (0 is perfect). Dominated by large errors on bright structures; "
    "blind to whether an error is a shifted edge or an invented object.",
    "mae": "Mean absolute error of intensities (0 is perfect). Like MSE but less dominated by a few large errors.",
    "psnr": "Peak signal-to-noise ratio in dB (higher is better): MSE on a log scale relative to the intensity "
    "range. Says nothing about structure.",
    "ssim": "Structural similarity (1 is identical): compares local means, contrasts and correlations in 11 px "
    "windows. Sensitive to blur and texture, but a plausible invented nucleus can still score well.",
    "pearson": "Pearson correlation of pixel intensities (1 is perfect): insensitive to brightness and contrast "
    "offsets, so it measures whether bright and dark places agree.",
    "lpips": "Learned perceptual distance (0 is identical) from deep features of an ImageNet network. Closer to "
    "how images look than MSE, but trained on natural photographs, not microscopy.",
    "nuclei_f1": "F1 of nuclei matched one-to-one (IoU >= 0.5) between prediction and truth (1 is perfect): counts "
    "whole nuclei found, invented or lost, which no pixel score does. It depends on the detector that turns "
    "both images into nuclei, and says nothing about intensities inside a nucleus.",
    "hallucinated": "Predicted nuclei without a true partner: nuclei the model invented (or split, or misplaced "
    "by more than the IoU allows).",
    "missed": "True nuclei without a predicted partner: real nuclei the model did not draw.",
    "count_error": "Predicted minus true number of nuclei per image: near zero can hide as many inventions as "
    "losses, so read it next to the two counts above.",
}
MAPS = (
    "Maps: absolute error (bright = large error), 1-SSIM (bright = locally dissimilar), LPIPS (bright = "
    "perceptually different, when available). Object-level counts of invented or missed nuclei answer what "
    "these pixel scores cannot."
)


SEGMENTATION_EXPLANATIONS = {
    "iou": "Intersection over union of the thresholded mask with the truth (1 is perfect): the fraction of the "
    "union of both masks that they share. Blind to whether touching cells were split.",
    "dice": "Dice coefficient (F1 of pixels, 1 is perfect); always at least as high as IoU.",
    "precision": "Fraction of predicted foreground pixels that are truly foreground (low: spurious regions).",
    "recall": "Fraction of true foreground pixels that were found (low: missed or eroded cells).",
    "object_f1": "F1 of cells matched one-to-one at IoU >= 0.5: counts whole cells found, missed or invented, "
    "which pixel scores cannot.",
    "missed": "True cells without a predicted partner at IoU >= 0.5.",
    "spurious": "Predicted cells without a true partner at IoU >= 0.5.",
}


# What a verdict weighs: the scores that say "better" without a trade-off (precision and recall trade off against
# each other, and the all-foreground baseline wins recall by construction).
VERDICT_METRICS = ("ssim", "psnr", "mse", "mae", "pearson", "lpips", "nuclei_f1", "iou", "dice", "object_f1")
LOWER_IS_BETTER = ("mse", "mae", "lpips")


def verdict(metrics: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Model against every baseline on each compared score (means over images).

    Returns:
        ``table`` (console lines: method x score, mean ± sd), ``line`` (one-sentence verdict), ``losses`` (one
        sentence per score where a baseline does better) and ``beats_all``.
    """
    model = metrics.get("model", {})
    names = [n for n in VERDICT_METRICS if n in model]
    width = max([len(m) for m in metrics] + [6])
    table = [f"{'method':<{width}}" + "".join(f"{n:>18}" for n in names)]
    for method, stats in metrics.items():
        table.append(f"{method:<{width}}" + "".join(
            f"{stats[n]['mean']:>10.4g} ± {stats[n]['std']:<5.2g}" if n in stats else f"{'':>18}" for n in names))
    baselines = [m for m in metrics if m != "model"]
    lost = [(method, n) for method in baselines for n in names if n in metrics[method]
            and (model[n]["mean"] > metrics[method][n]["mean"] if n in LOWER_IS_BETTER
                 else model[n]["mean"] < metrics[method][n]["mean"])]
    losses = [f"The model loses to {method} on {n}: {model[n]['mean']:.4g} against {metrics[method][n]['mean']:.4g} "
              f"({'lower' if n in LOWER_IS_BETTER else 'higher'} is better)." for method, n in lost]
    if not baselines or not names:
        line = "Verdict: no baseline to compare with (baselines=false, or no targets)."
    elif not losses:
        line = f"Verdict: the model beats {', '.join(baselines)} on every compared score ({', '.join(names)})."
    else:
        scores = ", ".join(sorted({n for _, n in lost}))
        line = (f"Verdict: the model does NOT beat every baseline: it loses on {scores} "
                f"({len(losses)} of {len(baselines) * len(names)} comparisons); see the report.")
    return {"table": table, "line": line, "losses": losses, "beats_all": bool(baselines and names and not losses)}


def _table(summary: dict[str, Any], explanations: dict[str, str]) -> tuple[list[str], list[list[str]]]:
    methods = summary["metrics"]
    names = [m for m in explanations if any(m in v for v in methods.values())]
    rows = []
    for method, stats in methods.items():
        rows.append([method] + [f"{stats[n]['mean']:.4g} ± {stats[n]['std']:.2g}" if n in stats else "" for n in names])
    return ["method", *names], rows


def write_report(
    out_dir: Path, summary: dict[str, Any], rows: list[dict[str, Any]], figures: list[dict[str, Any]], kind: str,
    explanations: dict[str, str] | None = None, notes: str = MAPS,
    sections: list[tuple[str, list[str]]] | None = None,
) -> Path:
    """Write ``figures/<image>.png`` and ``report.html`` (or ``report.md`` for ``kind="markdown"``).

    ``sections`` are extra (title, paragraphs) placed before the figures.
    """
    sections = sections or []
    explanations = explanations or EXPLANATIONS
    figure_dir = out_dir / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    pictures = []
    for figure in figures:
        path = figure_dir / f"{figure['name']}.png"
        iio.imwrite(path, grid(figure["panels"]))
        pictures.append((figure["name"], path.relative_to(out_dir).as_posix(), list(figure["panels"])))
    header, table = _table(summary, explanations)
    present = [n for n in explanations if n in header]
    checkpoint = summary["checkpoint"]  # a list: an ensemble, its maps averaged
    checkpoint = checkpoint if isinstance(checkpoint, str) else f"the average of {len(checkpoint)}: " + ", ".join(checkpoint)
    if kind == "markdown":
        lines = ["# stainless evaluation", "", f"Checkpoint: `{checkpoint}`  ", f"Input: {summary['input']}  ",
                 f"Images: {summary['n_images']}; LPIPS: {summary.get('lpips', 'not used')}", ""]
        if table:
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(r) + " |" for r in table]
        lines += ["", "## What the numbers measure", ""] + [f"- **{n}**: {explanations[n]}" for n in present]
        lines += ["", notes, ""]
        for title, paragraphs in sections:
            lines += [f"## {title}", ""] + [p for para in paragraphs for p in (para, "")]
        lines += ["## Figures", ""]
        for name, rel, cols in pictures:
            lines += [f"**{name}** ({', '.join(cols)})", "", f"![{name}]({rel})", ""]
        path = out_dir / "report.md"
        path.write_text("\n".join(lines) + "\n")
        return path
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>stainless evaluation</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%}</style></head><body>",
        "<h1>stainless evaluation</h1>",
        f"<p>Checkpoint: <code>{esc(checkpoint)}</code><br>Input: {esc(summary['input'])}<br>"
        f"Images: {summary['n_images']}; LPIPS: {esc(summary.get('lpips', 'not used'))}</p>",
    ]
    if table:
        parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in table]
        parts.append("</table><p>Mean ± standard deviation over images.</p>")
    parts.append("<h2>What the numbers measure</h2><ul>")
    parts += [f"<li><b>{n}</b>: {esc(explanations[n])}</li>" for n in present]
    parts.append(f"</ul><p>{esc(notes)}</p>")
    for title, paragraphs in sections:
        parts.append(f"<h2>{esc(title)}</h2>" + "".join(f"<p>{esc(p)}</p>" for p in paragraphs))
    parts.append("<h2>Figures</h2>")
    for name, rel, cols in pictures:
        parts.append(f"<h3>{esc(name)}</h3><p>Columns: {esc(', '.join(cols))}</p><img src='{esc(rel)}'>")
    parts.append("</body></html>")
    path = out_dir / "report.html"
    path.write_text("\n".join(parts))
    return path


def verdict_section(judged: dict[str, Any]) -> tuple[str, list[str]]:
    """The report's account of model against baselines, in words."""
    return "Model against baselines", [judged["line"], *judged["losses"],
                                       "Means over images; a difference smaller than the spread over images "
                                       "(± sd in the table) is not conclusive."]


def print_outcome(judged: dict[str, Any], out_dir: Path, report: Path | None, notes: tuple[str, ...] = ()) -> None:
    """The console's summary of an evaluation: the score table, the verdict, ``notes`` (lines explaining the
    scores), and where the files are."""
    rank_zero_info("\n".join(["", *judged["table"], judged["line"], *notes]))
    rank_zero_info(f"Evaluation written to {out_dir}" + (f" (report: {report.name})" if report else ""))
