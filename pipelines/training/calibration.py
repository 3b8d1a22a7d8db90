"""Decision-threshold calibration: the probability cut that maximises the F-measure.

Pixels are pooled over the whole validation split (true and false positives summed over
every image, then one F-beta per cut), so a false alarm on a defect-free frame costs as
much as one beside a defect. The per-image mean F behind the ``max_f`` metric cannot see
defect-free frames (their F is 0 at every cut), and a factory line mostly sends those.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def calibrate_image_threshold(scores: Sequence[float], defective: Sequence[bool], *, escape_cost: float = 1.0,
                              passes_area: Sequence[bool] | None = None) -> float | None:
    """The image-score cut (NG when score >= cut) that minimises
    ``overkill_rate + escape_cost * escape_rate`` on the validation frames.

    ``escape_cost`` 1 weighs a missed defective part and a rejected good part by their
    rates equally (balanced error); raise it when escapes cost more than overkill.
    ``passes_area[i]``: whether frame i meets ``min_defect_area_px`` (frames that do not
    stay OK whatever the cut). Cuts sit midway between neighbouring scores, so a score
    that moves by float noise between evaluation and serving cannot flip a verdict;
    among equally good cuts the middle one is taken. None when the split lacks either
    defective or defect-free frames (nothing to trade off).
    """
    scores = np.asarray(scores, dtype=np.float64)
    defective = np.asarray(defective, dtype=bool)
    eligible = np.ones(len(scores), bool) if passes_area is None else np.asarray(passes_area, dtype=bool)
    if escape_cost <= 0:
        raise ValueError(f"escape_cost must be > 0, got {escape_cost}")
    if defective.all() or not defective.any():
        return None
    levels = np.unique(scores)
    cuts = np.concatenate([[levels[0] / 2], (levels[:-1] + levels[1:]) / 2, [(levels[-1] + 1) / 2]])
    rejected = (scores[None, :] >= cuts[:, None]) & eligible[None, :]
    overkill_rate = (rejected & ~defective).sum(axis=1) / (~defective).sum()
    escape_rate = (~rejected & defective).sum(axis=1) / defective.sum()
    cost = overkill_rate + escape_cost * escape_rate
    best = np.flatnonzero(cost <= cost.min() + 1e-12)
    return float(cuts[best[len(best) // 2]])
