"""Decision-threshold calibration: the pixel cut that maximises the F-measure, and the image
cut that meets a quality target (escape or overkill rate, or a cost), with confidence bounds.

Pixels are pooled over the whole validation split (true and false positives summed over
every image, then one F-beta per cut), so a false alarm on a defect-free frame costs as
much as one beside a defect. The per-image mean F behind the ``max_f`` metric cannot see
defect-free frames (their F is 0 at every cut), and a factory line mostly sends those.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

BETA2 = 0.3  # the saliency literature's F-measure weighting (precision-leaning)
LEVELS = 256  # cuts at k/255, like the uint8 thresholds of the F-measure curve
DEFAULT_THRESHOLD = 0.5  # when the split has no defect pixel to calibrate on


class ThresholdCalibrator:
    def __init__(self) -> None:
        # Pixel counts per quantised probability level k = floor(prob * 255).
        self._defect = np.zeros(LEVELS, np.int64)
        self._background = np.zeros(LEVELS, np.int64)
        self.count = 0

    def update(self, prob: np.ndarray, mask: np.ndarray) -> None:
        """``prob`` in [0, 1] and a same-size boolean ground-truth mask."""
        levels = np.clip(np.asarray(prob, dtype=np.float64) * (LEVELS - 1), 0, LEVELS - 1).astype(np.int64)
        mask = np.asarray(mask, dtype=bool)
        if levels.shape != mask.shape:
            raise ValueError(f"prediction {levels.shape} and mask {mask.shape} must have the same shape")
        self._defect += np.bincount(levels[mask], minlength=LEVELS)
        self._background += np.bincount(levels[~mask], minlength=LEVELS)
        self.count += 1

    def merge(self, other: "ThresholdCalibrator") -> "ThresholdCalibrator":
        """Add ``other``'s pixel counts (another rank's frames) to this one (returns self)."""
        self._defect += other._defect
        self._background += other._background
        self.count += other.count
        return self

    def compute(self) -> float:
        """The threshold t (predict defect where prob >= t) with the best pooled F-measure;
        among equally good cuts the middle one is taken."""
        if self.count == 0:
            raise ValueError("no images to calibrate the threshold on")
        total_defect = self._defect.sum()
        if total_defect == 0:
            return DEFAULT_THRESHOLD
        # Predicting "defect" at level >= k: reverse cumulative sums give TP and FP per cut k.
        true_pos = np.cumsum(self._defect[::-1])[::-1].astype(np.float64)
        false_pos = np.cumsum(self._background[::-1])[::-1].astype(np.float64)
        precision = np.divide(true_pos, true_pos + false_pos, out=np.zeros(LEVELS), where=true_pos + false_pos > 0)
        recall = true_pos / total_defect
        denominator = BETA2 * precision + recall
        f_beta = np.divide((1 + BETA2) * precision * recall, denominator, out=np.zeros(LEVELS), where=denominator > 0)
        best = np.flatnonzero(f_beta >= f_beta.max() - 1e-12)
        return float(best[len(best) // 2]) / (LEVELS - 1)


ESCAPE_COST, MAX_ESCAPE_RATE, MAX_OVERKILL_RATE = "escape_cost", "max_escape_rate", "max_overkill_rate"
OBJECTIVES = (ESCAPE_COST, MAX_ESCAPE_RATE, MAX_OVERKILL_RATE)
CALIBRATION_KEY = "calibration"  # a saved model's metadata: the CalibrationRecord of its rule
CONFIDENCE = 0.95  # one-sided upper bounds on escape and overkill rates


@dataclass(frozen=True)
class Objective:
    """How the image threshold is chosen on the calibration frames.

    ``max_escape_rate`` R: the lowest-overkill cut whose escape rate is at most R (a quality
    engineer's target); ``max_overkill_rate`` R: symmetric; ``escape_cost`` C: the cut that
    minimises ``overkill_rate + C * escape_rate`` (1: balanced error).
    """

    method: str
    value: float

    def __post_init__(self) -> None:
        if self.method not in OBJECTIVES:
            raise ValueError(f"unknown calibration objective {self.method!r}; one of {', '.join(OBJECTIVES)}")
        value = self.value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{self.method} must be a number, got {value!r}")
        if self.method == ESCAPE_COST and value <= 0:
            raise ValueError(f"escape_cost must be > 0, got {value}")
        if self.method != ESCAPE_COST and not 0 <= value < 1:
            raise ValueError(f"{self.method} must be a rate in [0, 1), got {value}")

    @classmethod
    def choose(cls, *, max_escape_rate: float | None = None, max_overkill_rate: float | None = None,
               escape_cost: float | None = None, default: Objective | None = None) -> Objective:
        """The one objective given (at most one may be; none: ``default``, else balanced error)."""
        given = [(name, value) for name, value in ((MAX_ESCAPE_RATE, max_escape_rate),
                                                    (MAX_OVERKILL_RATE, max_overkill_rate),
                                                    (ESCAPE_COST, escape_cost)) if value is not None]
        if len(given) > 1:
            raise ValueError(f"give one calibration target, not {' and '.join(name for name, _ in given)}")
        return cls(*given[0]) if given else default or BALANCED

    def describe(self) -> str:
        if self.method == ESCAPE_COST:
            return f"min overkill_rate + {self.value:g} x escape_rate"
        kept, other = ("escape", "overkill") if self.method == MAX_ESCAPE_RATE else ("overkill", "escape")
        return f"lowest {other} rate with {kept} rate <= {self.value:.2%}"


BALANCED = Objective(ESCAPE_COST, 1.0)  # overkill rate + escape rate: the old default


def upper_bound(errors: int, frames: int, confidence: float = CONFIDENCE) -> float | None:
    """One-sided Clopper-Pearson upper bound of a rate seen as ``errors`` of ``frames``
    (None without frames). Zero errors in n frames bounds the rate only at about 3/n."""
    from scipy.stats import beta

    if frames <= 0:
        return None
    if errors >= frames:
        return 1.0
    return float(beta.ppf(confidence, errors + 1, frames - errors))


def frames_needed(target: float, confidence: float = CONFIDENCE) -> int:
    """Frames of a class needed for zero errors to bound its rate at ``target``."""
    return math.ceil(math.log(1 - confidence) / math.log(1 - target)) if target > 0 else math.inf


def candidate_cuts(scores: np.ndarray) -> np.ndarray:
    """Cuts midway between neighbouring scores (and beyond both ends), so a score that moves
    by float noise between evaluation and serving cannot cross one."""
    levels = np.unique(scores)
    return np.concatenate([[levels[0] / 2], (levels[:-1] + levels[1:]) / 2, [(levels[-1] + 1) / 2]])


def calibrate_image_threshold(scores: Sequence[float], defective: Sequence[bool], *,
                              objective: Objective = BALANCED,
                              passes_area: Sequence[bool] | None = None,
                              weights: Sequence[float] | None = None) -> float | None:
    """The image-score cut (NG when score >= cut) that meets ``objective`` on the frames.

    ``passes_area[i]``: whether frame i meets ``min_defect_area_px`` (frames that do not
    stay OK whatever the cut). ``weights[i]``: how many frames frame i stands for (a frame
    kept with probability r stands for 1/r; default 1 each): the rates are weighted shares.
    Among equally good cuts the middle one is taken. None when the split lacks either
    defective or defect-free frames (nothing to trade off).
    Raises ValueError when no cut meets a rate target (only possible with the area rule).
    """
    scores = np.asarray(scores, dtype=np.float64)
    defective = np.asarray(defective, dtype=bool)
    eligible = np.ones(len(scores), bool) if passes_area is None else np.asarray(passes_area, dtype=bool)
    weight = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=np.float64)
    if defective.all() or not defective.any():
        return None
    cuts = candidate_cuts(scores)
    rejected = (scores[None, :] >= cuts[:, None]) & eligible[None, :]
    overkill_rate = ((rejected & ~defective) * weight).sum(axis=1) / weight[~defective].sum()
    escape_rate = ((~rejected & defective) * weight).sum(axis=1) / weight[defective].sum()
    if objective.method == ESCAPE_COST:
        cost, allowed = overkill_rate + objective.value * escape_rate, np.ones(len(cuts), bool)
    elif objective.method == MAX_ESCAPE_RATE:
        cost, allowed = overkill_rate, escape_rate <= objective.value + 1e-12
    else:
        cost, allowed = escape_rate, overkill_rate <= objective.value + 1e-12
    if not allowed.any():
        raise ValueError(f"no image threshold meets {objective.method} <= {objective.value:.2%}: frames below "
                         f"min_defect_area_px already give {escape_rate.min():.2%} escapes")
    cost = np.where(allowed, cost, np.inf)
    best = np.flatnonzero(cost <= cost.min() + 1e-12)
    return float(cuts[best[len(best) // 2]])


@dataclass(frozen=True)
class RateCount:
    """A rate seen on calibration, test or reviewed frames, with its one-sided 95 % upper bound.

    Frames sampled at unequal rates (the decision log keeps every NG frame but only a fraction
    of the OK ones) carry weights, each frame standing for 1/sample_rate frames: then ``rate``
    is the weighted share and the bound is Clopper-Pearson on Kish's effective count
    ``(sum w)^2 / sum w^2`` (the number of equally weighted frames that would be as informative).
    Unweighted, both are the plain counts.
    """

    errors: int
    frames: int
    weighted_rate: float | None = None  # None: every frame counts once
    effective_frames: float | None = None

    @classmethod
    def of(cls, wrong: Sequence[bool], weights: Sequence[float] | None = None) -> RateCount:
        """The rate of ``wrong`` among these frames (weighted when ``weights`` are given)."""
        wrong = np.asarray(wrong, dtype=bool)
        if weights is None:
            return cls(int(wrong.sum()), len(wrong))
        weights = np.asarray(weights, dtype=np.float64)
        total, squares = float(weights.sum()), float(np.square(weights).sum())
        return cls(int(wrong.sum()), len(wrong), float(weights[wrong].sum()) / total if total else None,
                   total * total / squares if squares else 0.0)

    @property
    def weighted(self) -> bool:
        return self.effective_frames is not None

    @property
    def rate(self) -> float | None:
        if self.weighted:
            return self.weighted_rate
        return self.errors / self.frames if self.frames else None

    @property
    def effective(self) -> float:
        return self.effective_frames if self.weighted else self.frames

    def upper_at(self, confidence: float) -> float | None:
        if self.rate is None:
            return None
        errors = self.rate * self.effective if self.weighted else self.errors
        return upper_bound(errors, self.effective, confidence)

    @property
    def upper(self) -> float | None:
        return self.upper_at(CONFIDENCE)

    def describe(self, what: str) -> str:
        if not self.frames:
            return f"{what}: no frames"
        if self.weighted:
            return (f"{what} {self.errors}/{self.frames} frames, weighted {self.rate:.2%} (95 % upper bound "
                    f"{self.upper:.2%} on {self.effective:.1f} effective frames)")
        return f"{what} {self.errors}/{self.frames} = {self.rate:.2%} (95 % upper bound {self.upper:.2%})"


def rates(defective: Sequence[bool], rejected: Sequence[bool],
          weights: Sequence[float] | None = None) -> tuple[RateCount, RateCount]:
    """(escapes of the defective frames, overkill of the good frames) of a set of decisions,
    weighted when ``weights`` are given (see :class:`RateCount`)."""
    defective, rejected = np.asarray(defective, bool), np.asarray(rejected, bool)
    weights = None if weights is None else np.asarray(weights, np.float64)
    return (RateCount.of(~rejected[defective], None if weights is None else weights[defective]),
            RateCount.of(rejected[~defective], None if weights is None else weights[~defective]))


def support_warnings(objective: Objective, escape: RateCount, overkill: RateCount) -> list[str]:
    """What the frames cannot support about ``objective``'s target (empty when they can)."""
    if objective.method == ESCAPE_COST:
        return []
    kept, kind = (escape, "defective") if objective.method == MAX_ESCAPE_RATE else (overkill, "good")
    what = objective.method.removeprefix("max_").replace("_", " ")
    if not kept.frames:
        return [f"no {kind} frames: the {what} cannot be measured"]
    if kept.upper <= objective.value:
        return []
    seen = f"{kept.errors} seen" if not kept.weighted else \
        f"{kept.errors} seen, weighted {kept.rate:.2%} on {kept.effective:.1f} effective frames"
    return [f"{kept.frames} {kind} frames cannot support {what} <= {objective.value:.2%}: "
            f"{seen}, 95 % upper bound {kept.upper:.2%}; zero errors would need >= "
            f"{frames_needed(objective.value)} {'effective ' if kept.weighted else ''}{kind} frames"]


@dataclass(frozen=True)
class CalibrationRecord:
    """How a decision rule's image threshold was chosen, stored beside the rule: the
    objective, the calibration set, what the rule does on it, and what that can claim.
    Rates are measured on the frames the cut was chosen on, so they are optimistic:
    claim the bounds of a held-out split (``jaffnet evaluate``)."""

    method: str
    target: float
    calibration_set: dict[str, str]  # e.g. {"split": "val", "dataset_manifest": "<sha256>"}
    escapes: int
    defective_frames: int
    overkill: int
    good_frames: int
    escape_upper95: float | None
    overkill_upper95: float | None
    warnings: tuple[str, ...] = ()
    # Sampled frames (a decision log's reviews): the weighted rates and Kish effective counts the
    # bounds rest on; None when every frame counted once (a dataset split).
    escape_rate: float | None = None
    overkill_rate: float | None = None
    effective_defective: float | None = None
    effective_good: float | None = None

    @classmethod
    def measure(cls, objective: Objective, defective: Sequence[bool], rejected: Sequence[bool],
                calibration_set: dict[str, str], warnings: Sequence[str] = (),
                weights: Sequence[float] | None = None) -> CalibrationRecord:
        escape, overkill = rates(defective, rejected, weights)
        return cls(objective.method, float(objective.value), dict(calibration_set), escape.errors, escape.frames,
                   overkill.errors, overkill.frames, escape.upper, overkill.upper,
                   tuple(warnings) + tuple(support_warnings(objective, escape, overkill)),
                   escape.weighted_rate, overkill.weighted_rate, escape.effective_frames, overkill.effective_frames)

    @property
    def escape_count(self) -> RateCount:
        return RateCount(self.escapes, self.defective_frames, self.escape_rate, self.effective_defective)

    @property
    def overkill_count(self) -> RateCount:
        return RateCount(self.overkill, self.good_frames, self.overkill_rate, self.effective_good)

    @property
    def objective(self) -> Objective:
        return Objective(self.method, self.target)

    def with_set(self, **calibration_set: str) -> CalibrationRecord:
        return replace(self, calibration_set={**self.calibration_set, **calibration_set})

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "warnings": list(self.warnings)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CalibrationRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in values.items() if k in known},
                      "warnings": tuple(values.get("warnings", ()))})

    def tags(self) -> dict[str, str]:
        """A registered version's tags for this record (the record itself is in its metadata)."""
        bounds = {f"calibration_{name}_upper95": f"{value:.6f}" for name, value in
                  (("escape", self.escape_upper95), ("overkill", self.overkill_upper95)) if value is not None}
        return {"calibrate_for": self.method, "calibration_target": f"{self.target:g}",
                **{f"calibration_{k}": str(v) for k, v in self.calibration_set.items()}, **bounds,
                "calibration_warnings": str(len(self.warnings))}

    def summary(self) -> list[str]:
        escape, overkill = self.escape_count, self.overkill_count
        where = ", ".join(f"{k} {v}" for k, v in self.calibration_set.items())
        lines = [f"calibrated for {self.objective.describe()} on {where or 'the calibration frames'}",
                 f"  on those frames: {escape.describe('escapes')}; {overkill.describe('overkill')}"]
        return lines + [f"  WARNING: {warning}" for warning in self.warnings]


def overkill_at_escape(scores: Sequence[float], defective: Sequence[bool], max_escape_rate: float,
                       passes_area: Sequence[bool] | None = None) -> tuple[float, RateCount, RateCount] | None:
    """The lowest-overkill cut with escape rate <= ``max_escape_rate`` on these frames and its
    (escape, overkill) counts; None without both defective and good frames or when no cut
    meets the target. Comparing models by this at one target compares the models, not
    each at its own threshold."""
    objective = Objective(MAX_ESCAPE_RATE, max_escape_rate)
    try:
        cut = calibrate_image_threshold(scores, defective, objective=objective, passes_area=passes_area)
    except ValueError:
        return None
    if cut is None:
        return None
    eligible = np.ones(len(scores), bool) if passes_area is None else np.asarray(passes_area, bool)
    return (cut, *rates(defective, (np.asarray(scores, np.float64) >= cut) & eligible))
