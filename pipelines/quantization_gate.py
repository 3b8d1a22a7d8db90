"""The accuracy gate of a quantised model: does it make the line's decisions fp32 makes?

Both predictors score the same frames through the one frame -> probability path
(``jaffnet.frames.predict_frames`` with the model's input contract), and each frame's
map is judged with the model's stored rule (``jaffnet.decision.judge``). The gate passes
when every check does:

- each of the eight saliency metrics of ``jaffnet.metrics`` (as ``jaffnet evaluate``
  computes them, over the split) within ``metric_tolerance`` (0.01) of fp32's;
- image-level OK/NG verdicts agreeing with fp32's on at least ``min_verdict_agreement``
  (99 %) of the frames;
- the mean over frames of the IoU of the two pixel masks (probability >= the rule's pixel
  threshold; two empty masks have IoU 1) at least ``min_mean_mask_iou`` (0.95).

The report lists each check (value, limit, pass/fail), both sides' metrics, and the
frames whose verdict flips or whose mask IoU falls below the limit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from jaffnet.contract import InputContract
from jaffnet.decision import DecisionRule, judge
from jaffnet.frames import Predict, predict_frames
from jaffnet.metrics import METRIC_COLUMNS, mask_iou
from pipelines.evaluation.scoring import EndpointVerdict, SplitAccumulator

MAX_LISTED_FRAMES = 50  # frames named per list in the report
MASK_IOU_CHECK = "mean mask IoU"


@dataclass(frozen=True)
class GateLimits:
    metric_tolerance: float = 0.01  # |metric - fp32 metric|, each saliency metric
    min_verdict_agreement: float = 0.99  # fraction of frames with fp32's OK/NG verdict
    min_mean_mask_iou: float = 0.95  # mean per-frame IoU of the masks at the pixel threshold


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    comparison: str  # "<=" or ">="
    passed: bool


@dataclass(frozen=True)
class FrameDifference:
    id: str
    defect_class: str
    reference: str  # fp32's verdict, OK or NG
    candidate: str
    reference_image_score: float
    candidate_image_score: float
    mask_iou: float
    max_abs_difference: float  # largest |p - p_fp32| in the frame


@dataclass
class GateReport:
    passed: bool
    split: str
    count: int
    reference: str  # e.g. "eager (fp32)"
    candidate: str  # e.g. "int8"
    rule: dict[str, Any]
    contract: dict[str, Any]
    limits: dict[str, float]
    checks: list[Check]
    reference_metrics: dict[str, float]  # overall saliency + image-level metrics
    candidate_metrics: dict[str, float]
    verdict_flips: list[FrameDifference]  # every frame whose OK/NG differs (first MAX_LISTED_FRAMES)
    flip_count: int
    low_iou_frames: list[FrameDifference]  # mask IoU below the limit, worst first (first MAX_LISTED_FRAMES)
    low_iou_count: int
    max_abs_difference: float  # over all pixels of all frames
    mean_abs_difference: float  # mean over frames of the mean |p - p_fp32|
    extra: dict[str, Any] = field(default_factory=dict)  # what the caller adds (model, dataset, timings)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GateReport:
        values = dict(values)
        values["checks"] = [Check(**c) for c in values["checks"]]
        for key in ("verdict_flips", "low_iou_frames"):
            values[key] = [FrameDifference(**f) for f in values[key]]
        return cls(**values)

    def format(self) -> str:
        rule = DecisionRule.from_dict(self.rule)
        lines = [f"accuracy gate: {self.candidate} vs {self.reference} on {self.split} ({self.count} frames), "
                 f"pixel threshold {rule.pixel_threshold:.4f}, image threshold {rule.image_threshold:.4f}",
                 f"{'check':<28} {'fp32':>8} {self.candidate[:8]:>8} {'value':>9}  {'limit':>9}  result",
                 "-" * 76]
        for check in self.checks:
            metric = check.name.removeprefix("|delta| ")
            ref = self.reference_metrics.get(metric)
            cand = self.candidate_metrics.get(metric)
            cells = (f"{ref:8.4f} {cand:8.4f}" if ref is not None and cand is not None else f"{'':8} {'':8}")
            lines.append(f"{check.name:<28} {cells} {check.value:9.4f}  {check.comparison} {check.limit:<6g}  "
                         f"{'pass' if check.passed else 'FAIL'}")
        lines.append(f"probability |p - p_fp32|: max {self.max_abs_difference:.4f}, "
                     f"mean {self.mean_abs_difference:.5f}")
        if self.flip_count:
            lines.append(f"{self.flip_count} verdict flip(s):")
            lines += [f"  {f.id} ({f.defect_class}): {f.reference} -> {f.candidate}, image score "
                      f"{f.reference_image_score:.4f} -> {f.candidate_image_score:.4f}, mask IoU {f.mask_iou:.3f}"
                      for f in self.verdict_flips]
        else:
            lines.append("verdict flips: none")
        if self.low_iou_count:
            lines.append(f"{self.low_iou_count} frame(s) with mask IoU < {self.limits['min_mean_mask_iou']:g}, "
                         "worst first:")
            lines += [f"  {f.id} ({f.defect_class}): IoU {f.mask_iou:.3f}, max |dp| {f.max_abs_difference:.4f}"
                      for f in self.low_iou_frames]
        lines.append("GATE PASSED" if self.passed else "GATE FAILED")
        return "\n".join(lines)


def run_gate(samples: Sequence[Any], contract: InputContract, rule: DecisionRule, reference: Predict,
             candidate: Predict, *, limits: GateLimits = GateLimits(), split: str = "test",
             reference_name: str = "eager (fp32)", candidate_name: str = "int8", batch_size: int = 8) -> GateReport:
    """Score ``candidate`` against ``reference`` on ``samples`` (items with ``id``,
    ``defect_class``, ``image`` and ``mask``, e.g. ``pipelines.data.dataset.Sample``).

    Both predictors go through ``predict_frames`` with ``contract``; both sides' verdicts
    come from ``judge(probability, rule)`` and their metrics from the scoring code
    ``jaffnet evaluate`` uses (``SplitAccumulator``), frame by frame, so no probability
    map is kept.
    """
    if not samples:
        raise ValueError(f"the {split} split holds no frames to gate on")
    sides = {"reference": SplitAccumulator(per_class=False), "candidate": SplitAccumulator(per_class=False)}
    flips: list[FrameDifference] = []
    differences: list[FrameDifference] = []
    ious: list[float] = []
    max_diff, mean_diffs = 0.0, []
    pairs = zip(predict_frames(samples, contract, reference, batch_size=batch_size),
                predict_frames(samples, contract, candidate, batch_size=batch_size), strict=True)
    for (sample, ref_prob), (_, cand_prob) in pairs:
        sample_id, defect_class = str(sample.id), str(sample.defect_class)
        ref_verdict, cand_verdict = judge(ref_prob, rule, max_regions=0), judge(cand_prob, rule, max_regions=0)
        for name, prob, verdict in (("reference", ref_prob, ref_verdict), ("candidate", cand_prob, cand_verdict)):
            sides[name].add(sample_id, defect_class, prob, sample.mask,
                            EndpointVerdict(verdict.decision, verdict.image_score))
        diff = np.abs(cand_prob - ref_prob)
        max_diff = max(max_diff, float(diff.max()))
        mean_diffs.append(float(diff.mean()))
        iou = mask_iou(ref_verdict.mask, cand_verdict.mask)
        ious.append(iou)
        difference = FrameDifference(sample_id, defect_class, ref_verdict.decision, cand_verdict.decision,
                                     ref_verdict.image_score, cand_verdict.image_score, iou, float(diff.max()))
        if difference.reference != difference.candidate:
            flips.append(difference)
        if iou < limits.min_mean_mask_iou:
            differences.append(difference)

    scores = {name: accumulator.finish(rule) for name, accumulator in sides.items()}
    reference_metrics, candidate_metrics = (scores[n].overall_metrics() for n in ("reference", "candidate"))
    checks = [_check(f"|delta| {metric}", abs(candidate_metrics[metric] - reference_metrics[metric]),
                     limits.metric_tolerance, "<=") for metric in METRIC_COLUMNS]
    count = len(ious)
    checks.append(_check("verdict agreement", 1.0 - len(flips) / count, limits.min_verdict_agreement, ">="))
    checks.append(_check(MASK_IOU_CHECK, float(np.mean(ious)), limits.min_mean_mask_iou, ">="))
    differences.sort(key=lambda d: d.mask_iou)
    return GateReport(
        passed=all(check.passed for check in checks), split=split, count=count,
        reference=reference_name, candidate=candidate_name, rule=rule.to_dict(), contract=contract.to_dict(),
        limits=asdict(limits), checks=checks, reference_metrics=reference_metrics,
        candidate_metrics=candidate_metrics, verdict_flips=flips[:MAX_LISTED_FRAMES], flip_count=len(flips),
        low_iou_frames=differences[:MAX_LISTED_FRAMES], low_iou_count=len(differences),
        max_abs_difference=max_diff, mean_abs_difference=float(np.mean(mean_diffs)),
    )


def _check(name: str, value: float, limit: float, comparison: str) -> Check:
    passed = value <= limit if comparison == "<=" else value >= limit
    return Check(name, float(value), float(limit), comparison, bool(passed))
