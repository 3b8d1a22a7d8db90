"""Saliency metrics (via pysodmetrics) and the paper-style table.

Predictions are probabilities in [0, 1] at each image's original size; they are passed
to pysodmetrics with ``normalize=False`` so no per-image min-max stretch happens: a
defect-free frame predicted as clean background scores as clean.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np
import py_sod_metrics as sod

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
LOWER_IS_BETTER = {"mae"}


def resize_probability(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a probability map back to an image's original size."""
    prob = np.asarray(prob, dtype=np.float32)
    if prob.shape != (height, width):
        prob = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(prob, 0.0, 1.0)


class SaliencyMetrics:
    """Accumulates per-image metrics; ``compute()`` averages them over the images seen."""

    def __init__(self) -> None:
        self._mae = sod.MAE()
        self._wfm = sod.WeightedFmeasure()
        self._sm = sod.Smeasure()
        self._em = sod.Emeasure()
        self._fm = sod.FmeasureV2({"fm": sod.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=0.3)})
        self.count = 0

    def update(self, prob: np.ndarray, mask: np.ndarray) -> None:
        """``prob``: float map in [0, 1]; ``mask``: same-size binary (bool or {0,1}/{0,255}) mask."""
        prob = np.asarray(prob, dtype=np.float64)
        mask = np.asarray(mask)
        if prob.ndim != 2 or prob.shape != mask.shape:
            raise ValueError(f"prediction {prob.shape} and mask {mask.shape} must be equal 2-D shapes")
        if prob.size and (prob.min() < 0 or prob.max() > 1):
            raise ValueError("prediction must hold probabilities in [0, 1]")
        gt = mask > (127 if mask.dtype == np.uint8 and mask.max() > 1 else 0)
        for metric in (self._mae, self._wfm, self._sm, self._em, self._fm):
            metric.step(prob, gt, normalize=False)
        self.count += 1

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no images were evaluated")
        em = self._em.get_results()["em"]
        fm = self._fm.get_results()["fm"]
        return {
            "mae": float(self._mae.get_results()["mae"]),
            "weighted_f": float(self._wfm.get_results()["wfm"]),
            "s_measure": float(self._sm.get_results()["sm"]),
            "mean_e": float(np.mean(em["curve"])),
            "adaptive_e": float(em["adp"]),
            "max_f": float(np.max(fm["dynamic"])),
            "mean_f": float(np.mean(fm["dynamic"])),
            "adaptive_f": float(fm["adaptive"]),
        }


def format_table(rows: Mapping[str, Mapping[str, float]], title: str | None = None) -> str:
    """Rows (e.g. per defect class plus 'overall') as a fixed-width table, paper column order."""
    name_width = max([len("class")] + [len(name) for name in rows])
    header = f"{'class':<{name_width}}  " + "  ".join(f"{h:>6}" for h in METRIC_COLUMNS.values())
    lines = [title] if title else []
    lines += [header, "-" * len(header)]
    for name, metrics in rows.items():
        cells = [f"{metrics[key]:6.4f}" if key in metrics else f"{'-':>6}" for key in METRIC_COLUMNS]
        lines.append(f"{name:<{name_width}}  " + "  ".join(cells))
    return "\n".join(lines)
