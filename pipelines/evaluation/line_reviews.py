"""The line's truth: operators' reviews of logged decisions, taken as a sample, and the escape and
overkill rates of any model's decisions against them. ``jaffnet replay --reviewed`` (the candidate's
and the logged model's errors), ``jaffnet calibrate --log`` (the cut) and ``GET /v1/line-quality``
(the endpoint's estimate) all weigh reviews here.

- **The sample**: decisions that kept their frame and carry an operator's review (an operator's OK
  later corrected by an escape report stays in it, as NG). An escape reported on a decision nobody
  reviewed is counted apart: it was not chosen at random, so it cannot stand for other frames.
- **The weights**: retention keeps a frame with probability ``sample_rate`` (every NG frame and
  every near-threshold OK frame at 1, the other OK frames at ``ok_sample_rate``), so a kept frame
  stands for 1/sample_rate frames. Within each (line, logged decision) class the weights are then
  scaled so that the class's reviewed frames stand for all its kept frames: operators who review
  every NG frame but a tenth of the OK ones do not tilt the rates towards NG.
- **The rates**: weighted shares (escapes: defective frames judged OK / defective frames; overkill:
  good frames judged NG / good frames), each with a one-sided 95 % Clopper-Pearson upper bound on
  Kish's effective count (:class:`pipelines.evaluation.calibration.RateCount`).

It assumes operators review the kept frames of a class without preference (the review queue is in
log order): reviewing only the frames that look suspicious would inflate both rates.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.decision_records import iso_time
from pipelines.evaluation.calibration import RateCount, rates

if TYPE_CHECKING:
    from jaffnet.decision import Verdict
    from pipelines.decision_records import StoredDecision

ALL_LINES = "all"
NO_LINE = "-"  # frames posted without a line


def in_review_sample(stored: StoredDecision) -> bool:
    """Whether an operator's review makes this decision part of the sample."""
    return stored.review is not None and stored.review.source == "review"


def frame_weight(stored: StoredDecision) -> float:
    """How many decisions of its class a kept frame stands for."""
    return 1.0 / stored.sample_rate


def _class_of(stored: StoredDecision) -> tuple[str | None, str]:
    return stored.line, stored.decision


@dataclass
class ReviewSample:
    """The reviewed kept frames of a log selection, gathered while its kept frames stream by."""

    rows: list[StoredDecision] = field(default_factory=list)  # the sample, in log order
    unreviewed: int = 0  # kept frames nobody reviewed
    reported_escapes: int = 0  # kept frames with only an escape report
    _kept: dict[tuple[str | None, str], float] = field(init=False, default_factory=lambda: defaultdict(float))

    def offer(self, stored: StoredDecision) -> bool:
        """Count one kept frame of the selection; True when it belongs to the sample."""
        self._kept[_class_of(stored)] += frame_weight(stored)
        if in_review_sample(stored):
            self.rows.append(stored)
            return True
        if stored.review is not None:
            self.reported_escapes += 1
        else:
            self.unreviewed += 1
        return False

    def weights(self) -> np.ndarray:
        """Each sampled frame's weight (see the module docstring), in the order of ``rows``."""
        reviewed: dict[tuple[str | None, str], float] = defaultdict(float)
        for row in self.rows:
            reviewed[_class_of(row)] += frame_weight(row)
        return np.array([frame_weight(row) * self._kept[_class_of(row)] / reviewed[_class_of(row)]
                         for row in self.rows], dtype=np.float64)

    def truth_ng(self) -> np.ndarray:
        """The operators' verdicts: True where the frame is defective."""
        return np.array([row.review.verdict == "NG" for row in self.rows], dtype=bool)

    def logged_ng(self) -> np.ndarray:
        """The logged model's decisions."""
        return np.array([row.decision == "NG" for row in self.rows], dtype=bool)

    def lines(self) -> list[str]:
        return [row.line or NO_LINE for row in self.rows]

    def digest(self) -> str:
        """sha256 of the sample's request ids and verdicts: which reviews a calibration rests on."""
        text = "".join(f"{row.request_id}\t{row.review.verdict}\n" for row in self.rows)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Errors:
    """One model's decisions against the reviews: escapes among the defective frames, overkill among
    the good ones (weighted, with bounds and the raw counts)."""

    escape: RateCount
    overkill: RateCount


def errors_by_line(lines: Sequence[str], truth_ng: Sequence[bool], judged_ng: Sequence[bool],
                   weights: Sequence[float]) -> dict[str, Errors]:
    """Each line's :class:`Errors` (in name order), then every line together under ``ALL_LINES``."""
    lines, truth_ng, judged_ng = np.asarray(lines, dtype=object), np.asarray(truth_ng, bool), \
        np.asarray(judged_ng, bool)
    weights = np.asarray(weights, np.float64)
    groups = [(name, lines == name) for name in sorted(set(lines.tolist()))]
    groups.append((ALL_LINES, np.ones(len(lines), bool)))
    return {name: Errors(*rates(truth_ng[member], judged_ng[member], weights[member])) for name, member in groups}


def judged_frames(rows: Iterable[tuple[StoredDecision, bytes]], loaded: Any, *, batch_size: int = 8,
                  max_regions: int = 100) -> Iterator[tuple[StoredDecision, np.ndarray, Verdict]]:
    """``(record, frame, verdict)``: each logged frame (its stored PNG) through ``loaded``'s input
    contract and decision rule by the endpoint's own path (``jaffnet.frames.predict_frames``, then
    ``jaffnet.decision.judge``), one frame in memory at a time (plus a batch)."""
    from jaffnet.decision import judge
    from jaffnet.frames import predict_frames
    from jaffnet.inference import build_predictor
    from pipelines.decision_records import read_png

    predictor = build_predictor(loaded.model, "eager")
    decoded = ((stored, read_png(frame_png)) for stored, frame_png in rows)  # the 8-bit RGB frame judged
    for (stored, frame), probability in predict_frames(decoded, loaded.contract, predictor, batch_size=batch_size,
                                                       image_of=lambda item: item[1]):
        yield stored, frame, judge(probability, loaded.rule, max_regions)


@dataclass(frozen=True)
class LogSelection:
    """Which decisions of a log: a folder, optionally one line and a time range [since, until)."""

    folder: str
    line: str | None = None
    since: float | None = None  # unix seconds
    until: float | None = None

    def describe(self) -> dict[str, str]:
        return {"decision_log": self.folder, "line": self.line or ALL_LINES,
                "since": "start" if self.since is None else iso_time(self.since),
                "until": "end" if self.until is None else iso_time(self.until)}

    def __str__(self) -> str:
        return ", ".join(f"{key} {value}" for key, value in self.describe().items())
