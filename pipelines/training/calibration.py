"""Decision-threshold calibration: the probability cut that maximises the F-measure.

Uses the same per-image F-beta curve (beta^2 = 0.3, 256 uint8 thresholds) that gives the
``max_f`` metric, so the F-measure at the calibrated threshold is the reported max F.
"""

from __future__ import annotations

import numpy as np
import py_sod_metrics as sod

BETA2 = 0.3  # the saliency literature's F-measure weighting (precision-leaning)


class ThresholdCalibrator:
    def __init__(self) -> None:
        self._fm = sod.FmeasureV2({"fm": sod.FmeasureHandler(with_dynamic=True, with_adaptive=False, beta=BETA2)})
        self.count = 0

    def update(self, prob: np.ndarray, mask: np.ndarray) -> None:
        """``prob`` in [0, 1] and a same-size boolean ground-truth mask."""
        self._fm.step(np.asarray(prob, dtype=np.float64), np.asarray(mask, dtype=bool), normalize=False)
        self.count += 1

    def compute(self) -> float:
        """The threshold t (predict defect where prob >= t) with the best mean F-measure.

        pysodmetrics orders its curve by descending uint8 cut (index j means
        ``uint8(prob*255) >= 255 - j``); among equally good cuts the middle one is taken.
        """
        if self.count == 0:
            raise ValueError("no images to calibrate the threshold on")
        curve = self._fm.get_results()["fm"]["dynamic"]
        best = np.flatnonzero(curve >= curve.max() - 1e-12)
        j = int(best[len(best) // 2])
        return (255 - j) / 255.0
