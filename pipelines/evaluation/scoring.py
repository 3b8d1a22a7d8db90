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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from jaffnet.decision import DecisionRule, find_regions, image_score
from jaffnet.metrics import ImageLevelMetrics, SaliencyMetrics, image_saliency
from jaffnet.preprocess import to_rgb
from pipelines.evaluation.calibration import (
    BALANCED,
    MAX_ESCAPE_RATE,
    CalibrationRecord,
    Objective,
    ThresholdCalibrator,
    calibrate_image_threshold,
    frames_needed,
    overkill_at_escape,
)
from pipelines.evaluation.overlays import write_overlay

OVERALL = "overall"


@dataclass(frozen=True)
class EndpointVerdict:
    """What a live endpoint answered for one frame."""

    decision: str  # "OK" or "NG"
    image_score: float
    largest_region_px: int = 0
    defect_area_px: int = 0


@dataclass
class SplitScores:
    rows: dict[str, dict[str, float]]  # saliency metrics per defect class (when asked) and "overall"
    image_rows: dict[str, dict[str, float]]  # image-level OK/NG metrics, same keys
    rule: DecisionRule  # the operating point the image rows were computed at
    count: int
    overlays: list[Path] = field(default_factory=list)
    frames: dict[str, FrameRecord] = field(default_factory=dict)  # per frame, with the decision at ``rule``
    calibration: CalibrationRecord | None = None  # how ``rule`` was chosen, when calibrated on these frames

    @property
    def overall(self) -> dict[str, float]:
        return self.rows[OVERALL]

    @property
    def threshold(self) -> float:
        return self.rule.pixel_threshold

    def overall_metrics(self) -> dict[str, float]:
        """Saliency and image-level overall metrics in one flat mapping."""
        return {**self.rows[OVERALL], **self.image_rows[OVERALL]}

    def overkill_at_escape(self, max_escape_rate: float) -> float | None:
        """The overkill rate of the lowest-overkill cut with escape rate <= ``max_escape_rate``
        on these frames (the area rule kept): a score of the model, not of its stored rule."""
        records = list(self.frames.values())
        area = self.rule.min_defect_area_px
        point = overkill_at_escape([r.image_score for r in records], [r.defective for r in records],
                                   max_escape_rate,
                                   [r.largest_region_px >= area for r in records] if area else None)
        return None if point is None else point[2].rate


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80]


def _largest_region(probability: np.ndarray, pixel_threshold: float) -> int:
    return find_regions(probability >= pixel_threshold, probability, max_regions=0)[1]


@dataclass(frozen=True)
class FrameRecord:
    """What the image-level metrics need of one scored frame."""

    defect_class: str
    defective: bool
    image_score: float
    decision: str | None = None  # the endpoint's own when scoring its verdicts, else the rule's once finished
    largest_region_px: int = 0  # at the rule's pixel threshold (measured when the rule or the area rule needs it)
    defect_area_px: int = 0  # pixels at or above the rule's pixel threshold (likewise)


def calibrate_rule(pixel_threshold: float, frames: Mapping[str, FrameRecord], *, min_defect_area_px: int = 0,
                   objective: Objective = BALANCED, fallback: bool = False,
                   calibration_set: Mapping[str, str] | None = None,
                   weights: Sequence[float] | None = None) -> tuple[DecisionRule, CalibrationRecord]:
    """The image threshold of ``frames`` meeting ``objective`` at a calibrated pixel
    threshold, and the record of what it does there. Without both defective and good
    frames the image threshold falls back to the pixel threshold, marked not calibrated.
    ``fallback``: when the frames are too few for a rate target (zero errors could not
    bound the rate at the target), calibrate at balanced error instead, with a warning.
    ``weights``, in the order of ``frames``: how many frames each stands for (sampled frames)."""
    records = list(frames.values())
    defective = [r.defective for r in records]
    warnings = []
    if fallback and objective.method != BALANCED.method:
        kind, count = ("defective", sum(defective)) if objective.method == MAX_ESCAPE_RATE else \
            ("good", len(defective) - sum(defective))
        if count < frames_needed(objective.value):
            warnings.append(f"only {count} {kind} frames, {frames_needed(objective.value)} needed to support "
                            f"{objective.method} {objective.value:.2%}: calibrated for {BALANCED.describe()} instead")
            objective = BALANCED
    passes_area = [r.largest_region_px >= min_defect_area_px for r in records] if min_defect_area_px else None
    image_threshold = calibrate_image_threshold([r.image_score for r in records], defective, objective=objective,
                                                passes_area=passes_area, weights=weights)
    if image_threshold is None:
        warnings.append("the calibration frames lack defective or good frames: the image threshold is the pixel "
                        "threshold, NOT calibrated")
    rule = DecisionRule(pixel_threshold=pixel_threshold,
                        image_threshold=pixel_threshold if image_threshold is None else image_threshold,
                        min_defect_area_px=min_defect_area_px, calibrated=image_threshold is not None)
    rejected = [rule.is_ng(r.image_score, r.largest_region_px) for r in records]
    return rule, CalibrationRecord.measure(objective, defective, rejected, dict(calibration_set or {}), warnings,
                                           weights)


class SplitAccumulator:
    """A split's scoring state, filled frame by frame and mergeable: training ranks each
    score their own validation frames in parallel (per-image saliency values, pixel
    histograms for the threshold, one :class:`FrameRecord` per frame) and rank 0 merges
    the small results instead of gathering probability maps. ``finish`` calibrates (or
    applies) the rule and computes the tables; one accumulator over all frames and
    merged accumulators over any partition give the same scores."""

    def __init__(self, per_class: bool = True):
        self.per_class = per_class
        self.saliency: dict[str, SaliencyMetrics] = {OVERALL: SaliencyMetrics()}
        self.calibrator = ThresholdCalibrator()
        self.frames: dict[str, FrameRecord] = {}

    def add(self, sample_id: str, defect_class: str, probability: np.ndarray, mask: np.ndarray,
            verdict: EndpointVerdict | None = None) -> None:
        mask = np.asarray(mask) > 0
        prob = np.asarray(probability, dtype=np.float32)
        if prob.shape != mask.shape:
            raise ValueError(f"the prediction for {sample_id} is {prob.shape[1]}x{prob.shape[0]}, its frame "
                             f"{mask.shape[1]}x{mask.shape[0]}: maps must be at the frame's own size")
        if sample_id in self.frames:
            raise ValueError(f"{sample_id} was scored twice")
        image = image_saliency(prob, mask)  # once, for the overall row and the class's
        for name in self._rows_of(defect_class):
            self.saliency.setdefault(name, SaliencyMetrics()).add(image)
        self.calibrator.update(prob, mask)
        self.frames[sample_id] = FrameRecord(
            defect_class, bool(mask.any()), verdict.image_score if verdict else image_score(prob),
            verdict.decision if verdict else None, verdict.largest_region_px if verdict else 0,
            verdict.defect_area_px if verdict else 0)

    def measure_regions(self, probabilities: Callable[[str], np.ndarray], pixel_threshold: float) -> None:
        """Each frame's largest region and defect area at ``pixel_threshold``."""
        measured = {}
        for sample_id, record in self.frames.items():
            probability = probabilities(sample_id)
            area = int(np.count_nonzero(probability >= pixel_threshold))
            largest = _largest_region(probability, pixel_threshold) if area else 0
            measured[sample_id] = replace(record, largest_region_px=largest, defect_area_px=area)
        self.frames = measured

    def merge(self, other: "SplitAccumulator") -> "SplitAccumulator":
        if overlap := set(self.frames) & set(other.frames):
            raise ValueError(f"{len(overlap)} frames were scored twice, e.g. {sorted(overlap)[0]}")
        for name, metrics in other.saliency.items():
            self.saliency.setdefault(name, SaliencyMetrics()).merge(metrics)
        self.calibrator.merge(other.calibrator)
        self.frames.update(other.frames)
        return self

    def pixel_threshold(self, rule: DecisionRule | None = None) -> float:
        return self.calibrator.compute() if rule is None else rule.pixel_threshold

    def finish(self, rule: DecisionRule | None = None, *, min_defect_area_px: int = 0,
               objective: Objective = BALANCED, fallback: bool = False,
               calibration_set: Mapping[str, str] | None = None, pixel_threshold: float | None = None,
               overlays: list[Path] | None = None) -> SplitScores:
        """The tables at ``rule`` (None: calibrated here, on these frames, for ``objective``;
        see :func:`calibrate_rule`). With an area rule call :meth:`measure_regions` at
        :meth:`pixel_threshold` first. ``pixel_threshold``: calibrate only the image threshold,
        keeping this pixel threshold (a model recalibrated without retraining)."""
        if not self.frames:
            raise ValueError("the split holds no samples to score")
        calibration = None
        if rule is None:
            pixel_threshold = self.pixel_threshold() if pixel_threshold is None else pixel_threshold
            rule, calibration = calibrate_rule(pixel_threshold, self.frames,
                                               min_defect_area_px=min_defect_area_px, objective=objective,
                                               fallback=fallback, calibration_set=calibration_set)
        frames = {i: r if r.decision is not None else
                  replace(r, decision="NG" if rule.is_ng(r.image_score, r.largest_region_px) else "OK")
                  for i, r in self.frames.items()}
        image_level: dict[str, ImageLevelMetrics] = {OVERALL: ImageLevelMetrics()}
        for record in frames.values():
            for name in self._rows_of(record.defect_class):
                image_level.setdefault(name, ImageLevelMetrics()).update(record.image_score, record.defective,
                                                                         record.decision == "NG")
        good_scores = [r.image_score for r in frames.values() if not r.defective]
        order = sorted(name for name in self.saliency if name != OVERALL) + [OVERALL]
        return SplitScores(rows={name: self.saliency[name].compute() for name in order},
                           image_rows={name: image_level[name].compute(good_scores) for name in order},
                           rule=rule, count=len(frames), overlays=overlays or [], frames=frames,
                           calibration=calibration)

    def _rows_of(self, defect_class: str) -> list[str]:
        return [OVERALL, defect_class] if self.per_class else [OVERALL]


def score_predictions(probabilities: Mapping[str, np.ndarray], samples: Iterable[Any], *,
                      rule: DecisionRule | None = None, min_defect_area_px: int = 0,
                      objective: Objective = BALANCED, calibration_set: Mapping[str, str] | None = None,
                      pixel_threshold: float | None = None,
                      verdicts: Mapping[str, EndpointVerdict] | None = None, per_class: bool = True,
                      overlay_dir: str | Path | None = None, num_overlays: int = 0) -> SplitScores:
    """Score ``id -> probability map (frame size)`` against ``samples`` (items with ``id``,
    ``defect_class``, ``mask`` and, for overlays, ``image``) in one accumulator.

    Every sample needs a prediction and every prediction a sample: a mismatch means the
    predictions came from other data, and is an error rather than a silently partial score.
    """
    accumulator = SplitAccumulator(per_class)
    overlays: list[Path] = []
    missing: list[str] = []
    for sample in samples:
        sample_id = str(sample.id)
        if sample_id not in probabilities:
            missing.append(sample_id)
            continue
        accumulator.add(sample_id, str(sample.defect_class), probabilities[sample_id], sample.mask,
                        verdicts[sample_id] if verdicts else None)
        if overlay_dir is not None and len(overlays) < num_overlays:
            overlays.extend(overlay_of(sample, probabilities[sample_id], Path(overlay_dir), len(overlays)))
    unexpected = sorted(set(probabilities) - set(accumulator.frames))
    if missing or unexpected:
        raise ValueError(
            f"predictions do not match the split: {len(missing)} samples without a prediction "
            f"({', '.join(missing[:5])}), {len(unexpected)} predictions without a sample ({', '.join(unexpected[:5])})"
        )
    # Regions per frame: the area rule needs them to decide, a given rule to report them.
    known = pixel_threshold is not None or rule is not None
    if (known or min_defect_area_px) and not verdicts and accumulator.frames:
        at = pixel_threshold if pixel_threshold is not None else accumulator.pixel_threshold(rule)
        accumulator.measure_regions(probabilities.__getitem__, at)
    return accumulator.finish(rule, min_defect_area_px=min_defect_area_px, objective=objective,
                              calibration_set=calibration_set, pixel_threshold=pixel_threshold, overlays=overlays)


def overlay_of(sample: Any, probability: np.ndarray, directory: Path, index: int) -> list[Path]:
    """An overlay PNG of a defective sample that carries its image (none otherwise)."""
    image, mask = getattr(sample, "image", None), np.asarray(sample.mask) > 0
    if image is None or not mask.any():
        return []
    name = f"{index:02d}_{_safe_name(str(sample.id))}.png"
    return [write_overlay(directory / name, to_rgb(np.asarray(image)), mask, probability)]
