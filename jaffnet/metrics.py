"""Saliency metrics (via pysodmetrics) and the paper-style table.

Predictions are probabilities in [0, 1] at each image's original size; they are passed
to pysodmetrics with ``normalize=False`` so no per-image min-max stretch happens: a
defect-free frame predicted as clean background scores as clean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# name -> column header, in the order the paper's tables use.
METRIC_COLUMNS = {
    "mae": "MAE",
    "weighted_f": "wF",
    "s_measure": "Sm",
    "mean_e": "mEm",
    "adaptive_e": "adpEm",
    "max_f": "maxF",
    "mean_f": "meanF",
    "adaptive_f": "adpF",
}
# Image-level OK/NG metrics at the model's operating point (``ImageLevelMetrics``).
IMAGE_COLUMNS = {
    "image_auroc": "AUROC",
    "image_auroc_low": "low95",  # the AUROC's 95 % confidence interval (image_auroc_interval)
    "image_auroc_high": "high95",
    "overkill_rate": "overkill",
    "escape_rate": "escape",
    "true_ng": "TP(NG)",
    "overkill": "FP(NG)",
    "escapes": "FN(OK)",
    "true_ok": "TN(OK)",
}
IMAGE_COUNTS = ("true_ng", "overkill", "escapes", "true_ok")
LOWER_IS_BETTER = {"mae", "overkill_rate", "escape_rate", "overkill_at_escape"}


@dataclass(frozen=True)
class ImageSaliency:
    """One image's saliency results: its per-image scalars and its E- and F-measure curves
    (256 thresholds each)."""

    scalars: dict[str, float]
    e_curve: np.ndarray
    f_curve: np.ndarray


def image_saliency(prob: np.ndarray, mask: np.ndarray) -> ImageSaliency:
    """Score one image: ``prob`` a float map in [0, 1]; ``mask`` a same-size binary (bool or
    {0,1}/{0,255}) mask. Fresh pysodmetrics objects, so nothing of other images leaks in."""
    prob = np.asarray(prob, dtype=np.float64)
    mask = np.asarray(mask)
    if prob.ndim != 2 or prob.shape != mask.shape:
        raise ValueError(f"prediction {prob.shape} and mask {mask.shape} must be equal 2-D shapes")
    if prob.size and (prob.min() < 0 or prob.max() > 1):
        raise ValueError("prediction must hold probabilities in [0, 1]")
    gt = mask > (127 if mask.dtype == np.uint8 and mask.max() > 1 else 0)
    # Imported here, not at the top: pysodmetrics pulls in scikit-learn (1.5-2 s a process), and
    # every process that only reads a training config (a Tune trial's driver, Ray Train's
    # controller) imports this module for the metric names.
    import py_sod_metrics as sod

    mae, wfm, sm, em = sod.MAE(), sod.WeightedFmeasure(), sod.Smeasure(), sod.Emeasure()
    fm = sod.FmeasureV2({"fm": sod.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=0.3)})
    for metric in (mae, wfm, sm, em, fm):
        metric.step(prob, gt, normalize=False)
    e, f = em.get_results()["em"], fm.get_results()["fm"]
    scalars = {"mae": mae.get_results()["mae"], "weighted_f": wfm.get_results()["wfm"],
               "s_measure": sm.get_results()["sm"], "adaptive_e": e["adp"], "adaptive_f": f["adaptive"]}
    return ImageSaliency({key: float(value) for key, value in scalars.items()},
                         np.asarray(e["curve"], np.float64), np.asarray(f["dynamic"], np.float64))


class SaliencyMetrics:
    """Per-image metrics; ``compute()`` averages them over the images seen.

    Only each image's own results are kept (:class:`ImageSaliency`: a few scalars and two
    256-point curves), so accumulators filled in parallel (one per training rank) ``merge``
    into exactly what one accumulator over all images computes, and one image scored once
    can be ``add``-ed to several accumulators (overall and its defect class).
    """

    def __init__(self) -> None:
        self._scalars: dict[str, list[float]] = {key: [] for key in _PER_IMAGE_SCALARS}
        self._e_curves: list[np.ndarray] = []
        self._f_curves: list[np.ndarray] = []

    @property
    def count(self) -> int:
        return len(self._e_curves)

    def update(self, prob: np.ndarray, mask: np.ndarray) -> None:
        """Score one image (:func:`image_saliency`) and add it."""
        self.add(image_saliency(prob, mask))

    def add(self, image: ImageSaliency) -> None:
        for key in _PER_IMAGE_SCALARS:
            self._scalars[key].append(image.scalars[key])
        self._e_curves.append(image.e_curve)
        self._f_curves.append(image.f_curve)

    def merge(self, other: "SaliencyMetrics") -> "SaliencyMetrics":
        """Add ``other``'s images to this accumulator (returns self)."""
        for key, values in other._scalars.items():
            self._scalars[key].extend(values)
        self._e_curves.extend(other._e_curves)
        self._f_curves.extend(other._f_curves)
        return self

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no images were evaluated")
        mean = {key: float(np.mean(values)) for key, values in self._scalars.items()}
        e_curve, f_curve = np.mean(self._e_curves, axis=0), np.mean(self._f_curves, axis=0)
        return {
            "mae": mean["mae"],
            "weighted_f": mean["weighted_f"],
            "s_measure": mean["s_measure"],
            "mean_e": float(np.mean(e_curve)),
            "adaptive_e": mean["adaptive_e"],
            "max_f": float(np.max(f_curve)),
            "mean_f": float(np.mean(f_curve)),
            "adaptive_f": mean["adaptive_f"],
        }


_PER_IMAGE_SCALARS = ("mae", "weighted_f", "s_measure", "adaptive_e", "adaptive_f")


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; two empty masks agree fully (1.0)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def _midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return ranks


def image_auroc(scores: np.ndarray, defective: np.ndarray) -> float | None:
    """Area under the ROC curve of image scores for "has a defect" (ties count half);
    None when the frames are all of one kind."""
    scores, defective = np.asarray(scores, np.float64), np.asarray(defective, bool)
    positives, negatives = int(defective.sum()), int((~defective).sum())
    if positives == 0 or negatives == 0:
        return None
    u = _midranks(scores)[defective].sum() - positives * (positives + 1) / 2  # Mann-Whitney U
    return float(u / (positives * negatives))


def image_auroc_interval(scores: np.ndarray, defective: np.ndarray,
                         confidence: float = 0.95) -> tuple[float, float] | None:
    """Two-sided ``confidence`` interval of :func:`image_auroc` over frames like these
    (DeLong et al. 1988 variance, normal on the logit scale so it stays inside (0, 1)).

    With a few dozen good frames one of them outscoring the defects moves the AUROC by
    several points: the interval says how far a second test split could land. When no pair
    is misranked (AUROC 0 or 1) DeLong's variance is 0, so the variance is Hanley and
    McNeil's (1982) at half a misranked pair instead. None when the frames are all of one kind.
    """
    from statistics import NormalDist

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    scores, defective = np.asarray(scores, np.float64), np.asarray(defective, bool)
    positives, negatives = int(defective.sum()), int((~defective).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = _midranks(scores)
    # per frame, the share of the other kind it is ranked above (DeLong's structural components)
    above_good = (ranks[defective] - _midranks(scores[defective])) / negatives
    below_defective = 1 - (ranks[~defective] - _midranks(scores[~defective])) / positives
    auroc = float(above_good.mean())
    variance = ((above_good.var(ddof=1) if positives > 1 else 0.0) / positives
                + (below_defective.var(ddof=1) if negatives > 1 else 0.0) / negatives)
    pairs = positives * negatives
    centre = min(max(auroc, 0.5 / pairs), 1 - 0.5 / pairs)
    if variance <= 0:
        a = max(centre, 1 - centre)  # their formula is for AUROC > 0.5; the variance is symmetric
        q1, q2 = a / (2 - a), 2 * a ** 2 / (1 + a)
        variance = (a * (1 - a) + (positives - 1) * (q1 - a ** 2) + (negatives - 1) * (q2 - a ** 2)) / pairs
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    logit, spread = np.log(centre / (1 - centre)), z * np.sqrt(variance) / (centre * (1 - centre))
    return float(1 / (1 + np.exp(-(logit - spread)))), float(1 / (1 + np.exp(-(logit + spread))))


class ImageLevelMetrics:
    """OK/NG outcomes per frame -> AUROC of the image score, the confusion matrix at the
    operating point, overkill rate (good frames rejected / good frames) and escape rate
    (defective frames passed / defective frames). Rates with no frame to count are left out."""

    def __init__(self) -> None:
        self.scores: list[float] = []
        self.defective: list[bool] = []
        self.rejected: list[bool] = []

    @property
    def count(self) -> int:
        return len(self.scores)

    def update(self, score: float, defective: bool, rejected: bool) -> None:
        self.scores.append(float(score))
        self.defective.append(bool(defective))
        self.rejected.append(bool(rejected))

    def compute(self, good_scores: Sequence[float] = ()) -> dict[str, float]:
        """``good_scores``: the image scores of a split's good frames, which a row holding only
        defective frames (one defect class) is ranked against for its AUROC; counts and rates
        stay the row's own."""
        defective, rejected = np.asarray(self.defective, bool), np.asarray(self.rejected, bool)
        result = {
            "true_ng": float(np.sum(defective & rejected)),
            "overkill": float(np.sum(~defective & rejected)),
            "escapes": float(np.sum(defective & ~rejected)),
            "true_ok": float(np.sum(~defective & ~rejected)),
        }
        if (~defective).any():
            result["overkill_rate"] = result["overkill"] / float(np.sum(~defective))
        if defective.any():
            result["escape_rate"] = result["escapes"] / float(np.sum(defective))
        scores, labels = np.asarray(self.scores, np.float64), defective
        if defective.size and defective.all() and len(good_scores):
            scores = np.concatenate([scores, np.asarray(good_scores, np.float64)])
            labels = np.concatenate([defective, np.zeros(len(good_scores), bool)])
        auroc = image_auroc(scores, labels)
        if auroc is not None:
            result["image_auroc"] = auroc
            result["image_auroc_low"], result["image_auroc_high"] = image_auroc_interval(scores, labels)
        return result


def format_table(rows: Mapping[str, Mapping[str, float]], title: str | None = None,
                 columns: Mapping[str, str] = METRIC_COLUMNS) -> str:
    """Rows (e.g. per defect class plus 'overall') as a fixed-width table, paper column order.
    Frame counts print as integers; a metric a row lacks prints as '-'."""
    name_width = max([len("class")] + [len(name) for name in rows])
    widths = {key: max(6, len(header)) for key, header in columns.items()}
    header = f"{'class':<{name_width}}  " + "  ".join(f"{h:>{widths[k]}}" for k, h in columns.items())
    lines = [title] if title else []
    lines += [header, "-" * len(header)]
    for name, metrics in rows.items():
        cells = [_cell(key, metrics.get(key), widths[key]) for key in columns]
        lines.append(f"{name:<{name_width}}  " + "  ".join(cells))
    return "\n".join(lines)


def _cell(key: str, value: float | None, width: int) -> str:
    if value is None:
        return f"{'-':>{width}}"
    if key in IMAGE_COUNTS:
        return f"{int(value):>{width}d}"
    return f"{value:{width}.4f}"
