"""Saliency metrics of predicted probability maps against a split's original masks.

Predictions made at the training size are resized back to each image's own size before
scoring (``jaffnet.metrics.resize_probability``), as the paper evaluates. The same pass
calibrates the decision threshold and writes overlays for the first few defect images.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jaffnet.metrics import SaliencyMetrics, resize_probability
from jaffnet.preprocess import to_rgb
from pipelines.training.calibration import ThresholdCalibrator
from pipelines.training.overlays import write_overlay

OVERALL = "overall"


@dataclass
class SplitScores:
    rows: dict[str, dict[str, float]]  # per defect class (when asked) and "overall"
    threshold: float
    count: int
    overlays: list[Path] = field(default_factory=list)

    @property
    def overall(self) -> dict[str, float]:
        return self.rows[OVERALL]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80]


def score_predictions(probabilities: Mapping[str, np.ndarray], samples: Iterable[Any], *, per_class: bool = True,
                      overlay_dir: str | Path | None = None, num_overlays: int = 0) -> SplitScores:
    """Score ``id -> probability map`` against ``samples`` (``pipelines.data.iter_samples`` items).

    Every sample needs a prediction and every prediction a sample: a mismatch means the
    predictions came from other data, and is an error rather than a silently partial score.
    """
    overall, by_class = SaliencyMetrics(), {}
    calibrator = ThresholdCalibrator()
    overlays: list[Path] = []
    seen: set[str] = set()
    missing: list[str] = []
    for sample in samples:
        sample_id = str(sample.id)
        if sample_id not in probabilities:
            missing.append(sample_id)
            continue
        seen.add(sample_id)
        mask = np.asarray(sample.mask)
        prob = resize_probability(probabilities[sample_id], mask.shape[0], mask.shape[1])
        overall.update(prob, mask)
        calibrator.update(prob, mask > 0)
        if per_class:
            by_class.setdefault(str(sample.defect_class), SaliencyMetrics()).update(prob, mask)
        if overlay_dir is not None and len(overlays) < num_overlays and mask.any():
            name = f"{len(overlays):02d}_{_safe_name(sample_id)}.png"
            overlays.append(write_overlay(Path(overlay_dir) / name, to_rgb(np.asarray(sample.image)), mask, prob))
    unexpected = sorted(set(probabilities) - seen)
    if missing or unexpected:
        raise ValueError(
            f"predictions do not match the split: {len(missing)} samples without a prediction "
            f"({', '.join(missing[:5])}), {len(unexpected)} predictions without a sample ({', '.join(unexpected[:5])})"
        )
    if overall.count == 0:
        raise ValueError("the split holds no samples to score")
    rows = {name: by_class[name].compute() for name in sorted(by_class)}
    rows[OVERALL] = overall.compute()
    return SplitScores(rows=rows, threshold=calibrator.compute(), count=overall.count, overlays=overlays)
