"""``jaffnet evaluate --out DIR``: the per-frame table, image-level curves and the operating table.

What a quality engineer needs to pick or check an operating point, written beside each other:

- ``frames.csv``: one row per frame (``FRAME_COLUMNS``): truth, image score, the decision at
  the stored rule, the largest region and the defect area at its pixel threshold;
- ``roc.png`` and ``pr.png``: the image-level ROC and precision-recall curves of the image
  score, with the stored rule's operating point marked (and, with an area rule, the curve
  the rule really traces as its image threshold moves: a frame whose largest region is
  under ``min_defect_area_px`` stays OK at every cut);
- ``score_histogram.png``: image scores of OK vs NG frames, with the stored image threshold
  and the cuts that meet escape <= 1 % and 5 % on this split;
- ``operating_table.txt`` / ``.json``: overkill at escape 0 / 1 / 5 % per defect class and
  overall, each count with its one-sided 95 % Clopper-Pearson upper bound, and the same for
  the stored rule. The target cuts are chosen on the very frames they are measured on, so
  their rates are optimistic for this split; the stored rule's rows are the claim to make
  when this split was held out from calibration.
"""

from __future__ import annotations

import csv
import json
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaffnet.decision import DecisionRule
from jaffnet.metrics import image_auroc_interval
from pipelines.evaluation.calibration import CONFIDENCE, RateCount, overkill_at_escape
from pipelines.evaluation.evaluate import FRAME_COLUMNS, Evaluation

OVERALL = "overall"
TARGETS = (0.0, 0.01, 0.05)  # escape-rate targets of the operating table
HISTOGRAM_TARGETS = (0.01, 0.05)  # the escape cuts drawn on the score histogram
STORED = "stored rule"
_LOGIT_EPS = 1e-6  # scores are clipped to [eps, 1 - eps] on the histogram's logit axis
FILES = ("frames.csv", "roc.png", "pr.png", "score_histogram.png", "operating_table.txt", "operating_table.json")
OPTIMISM = ("Cuts chosen for an escape target are chosen on this split and measured on it: their rates are "
            "optimistic for this split (the target is met here by construction). Claim the stored rule's rows "
            "of a split held out from calibration, or choose a cut on one split and check it on another.")


def _target_label(target: float) -> str:
    return f"escape <= {target * 100:g}%"


def _rule_of(rule: DecisionRule | Mapping[str, Any] | None) -> DecisionRule | None:
    if rule is None or isinstance(rule, DecisionRule):
        return rule
    return DecisionRule.from_dict(dict(rule))


def _arrays(frames: Sequence[Mapping[str, Any]], min_defect_area_px: int):
    scores = np.asarray([float(f["image_score"]) for f in frames], np.float64)
    defective = np.asarray([f["label"] == "NG" for f in frames], bool)
    eligible = np.asarray([int(f.get("largest_region_px") or 0) >= min_defect_area_px for f in frames], bool)
    return scores, defective, eligible


def _no_cut_reason(defective: np.ndarray, target: float) -> str:
    if not defective.any():
        return "no defective frames: no escape rate to hold"
    if defective.all():
        return "no good frames: no overkill to trade off"
    return (f"no cut meets {_target_label(target)}: frames under min_defect_area_px stay OK at every cut "
            f"and already escape more")


def _block(frames: Sequence[Mapping[str, Any]], classes: list[str], rejected: np.ndarray | None,
           defective: np.ndarray, target: float | None, cut: float | None, note: str | None) -> list[dict]:
    rows = []
    class_of = np.asarray([str(f["defect_class"]) for f in frames], dtype=object)
    for name in classes:
        member = np.ones(len(frames), bool) if name == OVERALL else class_of == name
        bad, good = int(np.sum(member & defective)), int(np.sum(member & ~defective))
        row: dict[str, Any] = {"target": target, "basis": STORED if target is None else _target_label(target),
                               "cut": cut, "class": name, "defective_frames": bad, "good_frames": good}
        if rejected is None:
            row.update(escapes=None, escape_rate=None, escape_upper95=None,
                       overkill=None, overkill_rate=None, overkill_upper95=None)
        else:
            escape = RateCount(int(np.sum(member & defective & ~rejected)), bad)
            overkill = RateCount(int(np.sum(member & ~defective & rejected)), good)
            row.update(escapes=escape.errors, escape_rate=escape.rate, escape_upper95=escape.upper,
                       overkill=overkill.errors, overkill_rate=overkill.rate, overkill_upper95=overkill.upper)
        row["note"] = note
        rows.append(row)
    return rows


def operating_table(frames: Sequence[Mapping[str, Any]], targets: Sequence[float] = TARGETS,
                    min_defect_area_px: int = 0, *,
                    rule: DecisionRule | Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Escapes and overkill, per defect class and overall, at each escape-rate target and at
    the model's stored rule.

    For each target the cut (NG when ``image_score >= cut``) is the lowest-overkill one whose
    escape rate over ALL frames is <= the target (:func:`overkill_at_escape`; a frame whose
    ``largest_region_px`` is under ``min_defect_area_px`` stays OK at every cut); each class
    row then counts that one cut's escapes among the class's defective frames and overkill
    among its good frames, with one-sided 95 % Clopper-Pearson upper bounds. The last block
    (``target`` None, ``basis`` "stored rule") counts the frames' own ``decision``; ``rule``
    only supplies its ``cut`` (the stored image threshold) and decides frames without one.

    Rows: ``target, basis, cut, class, escapes, defective_frames, escape_rate,
    escape_upper95, overkill, good_frames, overkill_rate, overkill_upper95, note`` (counts,
    rates and bounds None where no cut exists or no frame is counted; ``note`` says why).
    """
    frames = list(frames)
    rule = _rule_of(rule)
    scores, defective, eligible = _arrays(frames, min_defect_area_px)
    classes = sorted({str(f["defect_class"]) for f in frames} - {OVERALL}) + [OVERALL]
    rows: list[dict[str, Any]] = []
    for target in targets:
        point = overkill_at_escape(scores, defective, float(target), eligible if min_defect_area_px else None) \
            if len(frames) else None
        if point is None:
            note = _no_cut_reason(defective, float(target)) if len(frames) else "no frames"
            rows += _block(frames, classes, None, defective, float(target), None, note)
        else:
            cut = point[0]
            rows += _block(frames, classes, (scores >= cut) & eligible, defective, float(target), cut, None)
    rejected = _rejected(frames, rule)
    if all(f.get("decision") in ("OK", "NG") for f in frames):
        note = None
    elif rejected is not None:
        note = "frames without a stored decision were decided by the rule"
    else:
        note = "frames without a stored decision"
    rows += _block(frames, classes, rejected, defective, None, rule.image_threshold if rule else None, note)
    return rows


def _rejected(frames: Sequence[Mapping[str, Any]], rule: DecisionRule | None) -> np.ndarray | None:
    """Each frame rejected (NG) by its stored decision, or by ``rule`` where it has none; None
    when a frame has no decision and there is no rule to decide it."""
    decisions = [f.get("decision") for f in frames]
    if rule is None and not all(d in ("OK", "NG") for d in decisions):
        return None
    return np.asarray([d == "NG" if d in ("OK", "NG") else
                       rule.is_ng(float(f["image_score"]), int(f.get("largest_region_px") or 0))
                       for f, d in zip(frames, decisions)], bool)


def _count(errors: int | None, frames: int) -> str:
    if not frames:
        return "-"
    return "?" if errors is None else f"{errors}/{frames}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def format_operating_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """``rows`` of :func:`operating_table` as a fixed-width console table, one block per target
    and one for the stored rule, then the notes and the optimism caveat."""
    header = ("rule", "cut", "class", "escapes", "rate", "upper95", "overkill", "rate", "upper95")
    body = []
    for row in rows:
        body.append((str(row["basis"]), "-" if row["cut"] is None else f"{row['cut']:.4f}", str(row["class"]),
                     _count(row["escapes"], row["defective_frames"]), _percent(row["escape_rate"]),
                     _percent(row["escape_upper95"]),
                     _count(row["overkill"], row["good_frames"]), _percent(row["overkill_rate"]),
                     _percent(row["overkill_upper95"])))
    widths = [max([len(h)] + [len(cells[i]) for cells in body]) for i, h in enumerate(header)]
    left = {0, 2}  # text columns

    def line(cells) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule_line = "-" * len(line(header))
    out = ["escapes: defective frames passed as OK / defective frames;  overkill: good frames rejected as NG / "
           "good frames", "upper95: the rate's one-sided 95 % Clopper-Pearson upper bound", "",
           line(header), rule_line]
    previous = None
    notes: list[str] = []
    for row, cells in zip(rows, body):
        if previous is not None and row["basis"] != previous:
            out.append(rule_line)
        # repeat the rule and cut only on a block's first row
        out.append(line(cells if row["basis"] != previous else ("", "", *cells[2:])))
        previous = row["basis"]
        if row.get("note"):
            note = f"{row['basis']}: {row['note']}"
            if note not in notes:
                notes.append(note)
    out += [rule_line] + [f"note: {note}" for note in notes]
    if any(row["target"] is not None for row in rows):
        out += textwrap.wrap(f"NOTE: {OPTIMISM}", width=100, subsequent_indent="      ")
    return "\n".join(out)


# --- curves -------------------------------------------------------------------------------------------


def _curve(scores: np.ndarray, defective: np.ndarray, eligible: np.ndarray | None = None) -> dict[str, Any]:
    """ROC and precision-recall points of "NG when score >= t" over every distinct score t
    (frames not ``eligible`` are never NG), from the strictest cut down."""
    scores = np.asarray(scores, np.float64)
    if eligible is not None:
        scores = np.where(eligible, scores, -np.inf)
    order = np.argsort(-scores, kind="mergesort")
    ordered, bad = scores[order], defective[order]
    true_pos, false_pos = np.cumsum(bad), np.cumsum(~bad)
    last_of_tie = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])
    cuts = last_of_tie[np.isfinite(ordered[last_of_tie])]
    positives, negatives = int(defective.sum()), int((~defective).sum())
    tp, fp = true_pos[cuts].astype(np.float64), false_pos[cuts].astype(np.float64)
    fpr, tpr = np.r_[0.0, fp / negatives], np.r_[0.0, tp / positives]
    precision, recall = np.r_[1.0, tp / np.maximum(tp + fp, 1)], np.r_[0.0, tp / positives]
    return {"fpr": fpr, "tpr": tpr, "precision": precision, "recall": recall, "thresholds": ordered[cuts],
            "auc": float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)),
            "average_precision": float(np.sum(np.diff(recall) * precision[1:]))}


def roc_pr_curves(scores: Sequence[float], defective: Sequence[bool],
                  eligible: Sequence[bool] | None = None) -> dict[str, Any] | None:
    """Image-level ROC (``fpr`` = overkill rate, ``tpr`` = 1 - escape rate) and precision-recall
    points with ``auc`` and ``average_precision`` (the step sum, as scikit-learn computes it);
    None without both defective and good frames."""
    defective = np.asarray(defective, bool)
    if not defective.any() or defective.all():
        return None
    return _curve(np.asarray(scores, np.float64), defective, None if eligible is None else np.asarray(eligible, bool))


# --- the report -------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on a line PC, a CI runner or a Ray worker
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


def _write_frames_csv(frames: Sequence[Mapping[str, Any]], path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(FRAME_COLUMNS), extrasaction="ignore", restval="")
        writer.writeheader()
        for frame in frames:
            writer.writerow({k: "" if frame.get(k) is None else frame.get(k) for k in FRAME_COLUMNS})
    return path


def _operating_point(defective: np.ndarray, rejected: np.ndarray) -> dict[str, float | None]:
    true_ng = int(np.sum(defective & rejected))
    called_ng = int(rejected.sum())
    return {"fpr": float(np.sum(~defective & rejected) / max(int((~defective).sum()), 1)),
            "tpr": float(true_ng / max(int(defective.sum()), 1)),
            "precision": true_ng / called_ng if called_ng else None}


def _rule_text(rule: DecisionRule) -> str:
    area = f" and a region >= {rule.min_defect_area_px} px" if rule.min_defect_area_px else ""
    calibrated = "" if rule.calibrated else " (NOT calibrated)"
    return f"NG when image_score >= {rule.image_threshold:.4f}{area}{calibrated}"


def _plot_curves(plt, evaluation: Evaluation, rule: DecisionRule, scores: np.ndarray, defective: np.ndarray,
                 eligible: np.ndarray, rejected: np.ndarray, out: Path) -> list[Path]:
    curve = roc_pr_curves(scores, defective)
    with_area = roc_pr_curves(scores, defective, eligible) if rule.min_defect_area_px else None
    point = _operating_point(defective, rejected)
    title = f"{evaluation.model} on {evaluation.split}: {int(defective.sum())} NG / {int((~defective).sum())} OK frames"
    marker = f"stored rule: {_rule_text(rule)}"
    area_label = f"image score, with the area rule (region >= {rule.min_defect_area_px} px)"

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    low, high = image_auroc_interval(scores, defective)
    ax.plot(curve["fpr"], curve["tpr"], label=f"image score (AUROC {curve['auc']:.4f}, 95 % CI {low:.3f}-{high:.3f})")
    if with_area is not None:
        # no AUC: frames under the area stay OK at every cut, so this curve stops short of (1, 1)
        ax.plot(with_area["fpr"], with_area["tpr"], linestyle="--", label=area_label)
    ax.plot([0, 1], [0, 1], color="0.7", linewidth=0.8, linestyle=":", label="chance")
    ax.plot([point["fpr"]], [point["tpr"]], "o", color="red", markersize=8, label=marker)
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="overkill rate (good frames rejected)  = FPR",
           ylabel="1 - escape rate (defective frames rejected)  = TPR", title=f"Image-level ROC\n{title}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    written = [_save(plt, fig, out / "roc.png")]

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    ax.plot(curve["recall"], curve["precision"], drawstyle="steps-pre",
            label=f"image score (AP {curve['average_precision']:.4f})")
    if with_area is not None:
        ax.plot(with_area["recall"], with_area["precision"], drawstyle="steps-pre", linestyle="--",
                label=f"{area_label} (AP {with_area['average_precision']:.4f})")
    prevalence = float(defective.mean())
    ax.axhline(prevalence, color="0.7", linewidth=0.8, linestyle=":", label=f"chance (NG share {prevalence:.2%})")
    if point["precision"] is not None:
        ax.plot([point["tpr"]], [point["precision"]], "o", color="red", markersize=8, label=marker)
    else:
        ax.plot([], [], "o", color="red", label=f"{marker}: rejects nothing, precision undefined")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="recall = 1 - escape rate",
           ylabel="precision (NG calls that are defective)", title=f"Image-level precision-recall\n{title}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    written.append(_save(plt, fig, out / "pr.png"))
    return written


def _plot_histogram(plt, evaluation: Evaluation, rule: DecisionRule, scores: np.ndarray, defective: np.ndarray,
                    rows: Sequence[Mapping[str, Any]], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    # A logit axis: trained models put most scores within 1e-3 of 0 or 1, where a linear axis
    # draws one bar and hides the overlap (and the cut) that matters.
    cuts = {row["target"]: row["cut"] for row in rows if row["target"] is not None and row["class"] == OVERALL}
    scores = np.clip(scores, _LOGIT_EPS, 1 - _LOGIT_EPS)
    marks = [rule.image_threshold, *(c for c in cuts.values() if c is not None)]
    span = np.clip(np.array([*scores, *marks, 0.01, 0.99]), _LOGIT_EPS, 1 - _LOGIT_EPS)
    logits = np.log(span / (1 - span))
    bins = 1 / (1 + np.exp(-np.linspace(logits.min(), logits.max(), 51)))
    ax.set_xscale("logit")
    for mask, label, colour in ((~defective, "OK (good) frames", "tab:blue"), (defective, "NG (defective) frames",
                                                                               "tab:orange")):
        if mask.any():
            ax.hist(scores[mask], bins=bins, alpha=0.55, color=colour, label=f"{label}: {int(mask.sum())}")
    if not len(scores):
        ax.text(0.5, 0.5, "no frames", ha="center", va="center", transform=ax.transAxes)
    ax.axvline(np.clip(rule.image_threshold, _LOGIT_EPS, 1 - _LOGIT_EPS), color="black", linewidth=1.6,
               label=f"stored image threshold {rule.image_threshold:.4g}")
    for target, style in zip(HISTOGRAM_TARGETS, ("--", ":")):
        if cuts.get(target) is not None:
            ax.axvline(np.clip(cuts[target], _LOGIT_EPS, 1 - _LOGIT_EPS), color="red", linestyle=style, linewidth=1.4,
                       label=f"{_target_label(target)} on this split: cut {cuts[target]:.4g}")
    if len(scores) and np.bincount(np.digitize(scores, bins)).max() > 50:
        ax.set_yscale("log")  # the good frames' peak would flatten the overlap that matters
    area = f"; area rule: NG also needs a region >= {rule.min_defect_area_px} px" if rule.min_defect_area_px else ""
    ax.set(xlabel=f"image score, logit scale (NG when >= cut{area})", ylabel="frames",
           title=f"Image scores, {evaluation.model} on {evaluation.split} ({len(scores)} frames)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, out / "score_histogram.png")


def write_report(evaluation: Evaluation, out_dir: str | Path) -> list[Path]:
    """Write ``frames.csv``, ``roc.png``, ``pr.png``, ``score_histogram.png``,
    ``operating_table.txt`` and ``operating_table.json`` of ``evaluation`` into ``out_dir``
    (created if missing) and return the paths written. Without both defective and good frames
    the ROC and PR curves are skipped (a note in the operating table says so); the rest is
    written. Raises ValueError when ``out_dir`` exists and is not a directory."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"the report folder {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    rule = DecisionRule.from_dict(evaluation.rule)
    frames = list(evaluation.frames)
    rows = operating_table(frames, TARGETS, rule.min_defect_area_px, rule=rule)
    scores, defective, eligible = _arrays(frames, rule.min_defect_area_px)
    rejected = _rejected(frames, rule)
    notes = []
    written = [_write_frames_csv(frames, out / "frames.csv")]
    plt = _pyplot()
    if len(frames) and defective.any() and not defective.all():
        written += _plot_curves(plt, evaluation, rule, scores, defective, eligible, rejected, out)
    else:
        what = "no frames" if not frames else "no good frames" if defective.all() else "no defective frames"
        notes.append(f"ROC and PR curves not written: the split has {what} (a curve needs both)")
    written.append(_plot_histogram(plt, evaluation, rule, scores, defective, rows, out))

    title = f"Operating table: {evaluation.model} on {evaluation.split} ({len(frames)} frames)"
    text = "\n".join([title, f"stored rule: {_rule_text(rule)}", "", format_operating_table(rows)]
                     + [f"note: {note}" for note in notes])
    (out / "operating_table.txt").write_text(text + "\n")
    written.append(out / "operating_table.txt")
    document = {"model": evaluation.model, "name": evaluation.name, "version": evaluation.version,
                "split": evaluation.split, "count": len(frames), "rule": rule.to_dict(), "targets": list(TARGETS),
                "confidence": CONFIDENCE, "caveat": OPTIMISM, "notes": notes, "rows": rows}
    (out / "operating_table.json").write_text(json.dumps(document, indent=2) + "\n")
    written.append(out / "operating_table.json")
    return written
