"""A scripted decision log with operators' reviews, written the way the endpoint writes them
(``serving.decision_log`` for decisions, ``pipelines.decision_records.write_review`` for reviews),
for the tests of `jaffnet ingest --format decision-log` and of training on its dataset."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.decision_records import DecisionReader, StoredReview, write_review
from serving.decision_log import DecisionLog, DecisionLogSettings, PendingDecision

START = time.time() - 3600  # decisions are stamped START + their index (seconds): inside the age limit


@dataclass
class Logged:
    """One decision: the model's call on a frame, and what an operator said (None: nobody)."""

    decision: str  # the model's OK/NG
    verdict: str | None = None  # the review's OK/NG
    regions: list[dict] = field(default_factory=list)
    source: str = "review"  # or escape
    line: str | None = "L1"
    image: np.ndarray | None = None  # default: a noisy frame; None with keep_frame False
    model_mask: np.ndarray | None = None  # default: the frame's bright pixels
    keep_frame: bool = True
    sample_rate: float = 1.0


def noisy_frame(seed: int, shape: tuple[int, int] = (24, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def write_log(folder: Path, entries: list[Logged]) -> list[str]:
    """Write ``entries`` (request ids ``req-0000``...) and their reviews into ``folder``."""
    log = DecisionLog(DecisionLogSettings(folder=str(folder)))
    try:
        seqs = []
        for index, entry in enumerate(entries):
            reply = {"request_id": f"req-{index:04d}", "model": {"name": "jaffnet", "version": "3", "run_id": "r"},
                     "decision": entry.decision, "reason": "test", "image_score": 0.9 if entry.decision == "NG" else 0.1,
                     "image_threshold": 0.5, "threshold": 0.5, "region_count": 0, "regions": [],
                     "kept": {"why": "test", "sample_rate": entry.sample_rate},
                     **({"line": entry.line} if entry.line else {})}
            image = entry.image if entry.image is not None else noisy_frame(index)
            mask = entry.model_mask if entry.model_mask is not None else image[:, :, 0] > 200
            pending = PendingDecision(reply, START + index, image if entry.keep_frame else None,
                                      mask if entry.keep_frame else None)
            seqs.append(log.submit(pending).result(timeout=30))
    finally:
        log.close()
    path = DecisionReader(folder).path
    for index, (seq, entry) in enumerate(zip(seqs, entries)):
        if entry.verdict is not None:
            review = StoredReview(entry.source, entry.verdict, entry.verdict == entry.decision, entry.regions, None,
                                  f"key-{index % 2}", "operator", START + 1000 + index,
                                  escape_reported=entry.source == "escape")
            assert write_review(path, seq, review)
    return [f"req-{index:04d}" for index in range(len(entries))]
