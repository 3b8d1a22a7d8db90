"""Scoring a split: saliency metrics, image-level OK/NG metrics, and the calibrated rule.

Probability maps arrive at each frame's own size (``jaffnet.frames`` made them, through
the model's input contract), so the pixels scored are the pixels the line would get.
Without a rule (training validation) the pixel threshold and the image threshold are
calibrated here on the split; with one (``jaffnet evaluate``) the stored operating point
is applied. With ``verdicts`` (a live endpoint's answers) the decisions and image scores
are the endpoint's own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jaffnet.decision import DecisionRule, find_regions, image_score
from jaffnet.metrics import ImageLevelMetrics, SaliencyMetrics
from jaffnet.preprocess import to_rgb
from pipelines.training.calibration import ThresholdCalibrator, calibrate_image_threshold
from pipelines.training.overlays import write_overlay

OVERALL = "overall"


@dataclass(frozen=True)
class EndpointVerdict:
    """What a live endpoint answered for one frame."""

    decision: str  # "OK" or "NG"
    image_score: float


@dataclass
class SplitScores:
    rows: dict[str, dict[str, float]]  # saliency metrics per defect class (when asked) and "overall"
    image_rows: dict[str, dict[str, float]]  # image-level OK/NG metrics, same keys
    rule: DecisionRule  # the operating point the image rows were computed at
    count: int
    overlays: list[Path] = field(default_factory=list)

    @property
    def overall(self) -> dict[str, float]:
        return self.rows[OVERALL]

    @property
    def threshold(self) -> float:
        return self.rule.pixel_threshold

    def overall_metrics(self) -> dict[str, float]:
        """Saliency and image-level overall metrics in one flat mapping."""
        return {**self.rows[OVERALL], **self.image_rows[OVERALL]}


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80]


def _largest_region(probability: np.ndarray, pixel_threshold: float) -> int:
    return find_regions(probability >= pixel_threshold, probability, max_regions=0)[1]


def calibrate_rule(pixel_threshold: float, scores: Mapping[str, float], defective: Mapping[str, bool],
                   largest: Mapping[str, int], *, min_defect_area_px: int = 0,
                   escape_cost: float = 1.0) -> DecisionRule:
    """The image threshold (overkill vs escapes) of a split at its calibrated pixel
    threshold; without both defective and good frames the image threshold falls back to
    the pixel threshold and the rule says it is not calibrated."""
    ids = list(scores)
    passes_area = [largest[i] >= min_defect_area_px for i in ids] if min_defect_area_px else None
    image_threshold = calibrate_image_threshold([scores[i] for i in ids], [defective[i] for i in ids],
                                                escape_cost=escape_cost, passes_area=passes_area)
    return DecisionRule(pixel_threshold=pixel_threshold,
                        image_threshold=pixel_threshold if image_threshold is None else image_threshold,
                        min_defect_area_px=min_defect_area_px, calibrated=image_threshold is not None)


def score_predictions(probabilities: Mapping[str, np.ndarray], samples: Iterable[Any], *,
                      rule: DecisionRule | None = None, min_defect_area_px: int = 0, escape_cost: float = 1.0,
                      verdicts: Mapping[str, EndpointVerdict] | None = None, per_class: bool = True,
                      overlay_dir: str | Path | None = None, num_overlays: int = 0) -> SplitScores:
    """Score ``id -> probability map (frame size)`` against ``samples`` (items with ``id``,
    ``defect_class``, ``mask`` and, for overlays, ``image``).

    Every sample needs a prediction and every prediction a sample: a mismatch means the
    predictions came from other data, and is an error rather than a silently partial score.
    """
    saliency: dict[str, SaliencyMetrics] = {OVERALL: SaliencyMetrics()}
    calibrator = ThresholdCalibrator()
    classes: dict[str, str] = {}
    defective: dict[str, bool] = {}
    scores: dict[str, float] = {}
    overlays: list[Path] = []
    missing: list[str] = []
    for sample in samples:
        sample_id = str(sample.id)
        if sample_id not in probabilities:
            missing.append(sample_id)
            continue
        mask = np.asarray(sample.mask) > 0
        prob = np.asarray(probabilities[sample_id], dtype=np.float32)
        if prob.shape != mask.shape:
            raise ValueError(f"the prediction for {sample_id} is {prob.shape[1]}x{prob.shape[0]}, its frame "
                             f"{mask.shape[1]}x{mask.shape[0]}: maps must be at the frame's own size")
        classes[sample_id] = str(sample.defect_class)
        defective[sample_id] = bool(mask.any())
        scores[sample_id] = verdicts[sample_id].image_score if verdicts else image_score(prob)
        targets = [OVERALL, classes[sample_id]] if per_class else [OVERALL]
        for name in targets:
            saliency.setdefault(name, SaliencyMetrics()).update(prob, mask)
        if rule is None:
            calibrator.update(prob, mask)
        image = getattr(sample, "image", None)
        if overlay_dir is not None and image is not None and len(overlays) < num_overlays and mask.any():
            name = f"{len(overlays):02d}_{_safe_name(sample_id)}.png"
            overlays.append(write_overlay(Path(overlay_dir) / name, to_rgb(np.asarray(image)), mask, prob))
    unexpected = sorted(set(probabilities) - set(classes))
    if missing or unexpected:
        raise ValueError(
            f"predictions do not match the split: {len(missing)} samples without a prediction "
            f"({', '.join(missing[:5])}), {len(unexpected)} predictions without a sample ({', '.join(unexpected[:5])})"
        )
    if not classes:
        raise ValueError("the split holds no samples to score")
    pixel_threshold = calibrator.compute() if rule is None else rule.pixel_threshold
    area_rule = min_defect_area_px if rule is None else rule.min_defect_area_px
    # Each frame's largest region at the pixel threshold, once: only the area rule needs it.
    largest = {i: _largest_region(probabilities[i], pixel_threshold) if area_rule and not verdicts else 0
               for i in classes}
    if rule is None:
        rule = calibrate_rule(pixel_threshold, scores, defective, largest, min_defect_area_px=min_defect_area_px,
                              escape_cost=escape_cost)

    image_level: dict[str, ImageLevelMetrics] = {OVERALL: ImageLevelMetrics()}
    for sample_id, class_name in classes.items():
        if verdicts:
            rejected = verdicts[sample_id].decision == "NG"
        else:
            rejected = rule.is_ng(scores[sample_id], largest[sample_id])
        for name in ([OVERALL, class_name] if per_class else [OVERALL]):
            image_level.setdefault(name, ImageLevelMetrics()).update(scores[sample_id], defective[sample_id], rejected)

    order = sorted(name for name in saliency if name != OVERALL) + [OVERALL]
    return SplitScores(rows={name: saliency[name].compute() for name in order},
                       image_rows={name: image_level[name].compute() for name in order},
                       rule=rule, count=len(classes), overlays=overlays)
