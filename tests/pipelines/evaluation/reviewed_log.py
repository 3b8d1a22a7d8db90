"""A scripted decision log with operators' reviews, written by serving's own writer (no Serve): what
``jaffnet replay --reviewed`` and ``jaffnet calibrate --log`` read. Also the tiny model that judges
it and each frame's image score through the model's contract (the oracle the tests count by hand).
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipelines.decision_records import DecisionReader, StoredReview, write_review

SIZE = 64
NOW = float(int(time.time()))  # record i is stamped NOW + i (retention drops records over 30 days old)
# (line, logged decision, sample rate, review): "NG"/"OK" an operator's verdict, "escape" only an escape
# report on a decision nobody reviewed, None unreviewed.
ENTRIES = [
    ("L1", "NG", 1.0, "NG"), ("L1", "NG", 1.0, "OK"), ("L1", "NG", 1.0, None), ("L1", "NG", 1.0, None),
    ("L1", "OK", 1.0, "NG"), ("L1", "OK", 1.0, None),  # near the threshold: kept at rate 1
    ("L1", "OK", 0.1, "OK"), ("L1", "OK", 0.1, "OK"), ("L1", "OK", 0.1, "NG"), ("L1", "OK", 0.1, "escape"),
    ("L1", "OK", 0.1, None),
    ("L2", "NG", 1.0, "NG"), ("L2", "OK", 0.5, "OK"), ("L2", "OK", 0.5, None),
]
REVIEWED = [i for i, entry in enumerate(ENTRIES) if entry[3] in ("OK", "NG")]
# The weights by hand: 1/rate, scaled so each (line, logged decision) class's reviewed frames stand for
# all its kept frames. L1 NG: 4 kept, 2 reviewed -> x2. L1 OK: kept 2 + 5 x 10 = 52, reviewed
# 1 + 3 x 10 = 31 -> x52/31. L2 NG: x1. L2 OK: kept 2 x 2 = 4, reviewed 2 -> x2.
WEIGHTS = {0: Fraction(2), 1: Fraction(2), 4: Fraction(52, 31), 6: Fraction(520, 31), 7: Fraction(520, 31),
           8: Fraction(520, 31), 11: Fraction(1), 12: Fraction(4)}


def request_id(index: int) -> str:
    return f"req-{index:04d}"


def frames() -> list[np.ndarray]:
    """Frames that differ in more than noise: a texture and a patch of its own brightness each."""
    images = []
    for index in range(len(ENTRIES)):
        image = np.random.default_rng(index).integers(60, 200, (SIZE, SIZE, 3), dtype=np.uint8)
        image[8:24, 8:24] = 15 * index
        images.append(image)
    return images


def tiny_model():
    import torch

    from jaffnet import JAFFNet

    torch.manual_seed(0)
    model = JAFFNet(width=0.125).eval()
    with torch.no_grad():  # image scores spread well beyond float rounding
        model.heads.convs[-1].weight *= 20.0
    return model


def image_scores(model) -> list[float]:
    """Each frame's image score through the resize contract: the path the endpoint takes."""
    from jaffnet.contract import InputContract
    from jaffnet.decision import image_score
    from jaffnet.frames import predict_frames
    from jaffnet.inference import build_predictor

    predicted = predict_frames(frames(), InputContract(SIZE, "resize"), build_predictor(model, "eager"),
                               image_of=lambda frame: frame)
    return [image_score(probability) for _, probability in predicted]


def write_log(folder: Path) -> DecisionReader:
    """ENTRIES as logged decisions with their frames, and their reviews."""
    from serving.decision_log import DecisionLog, DecisionLogSettings, PendingDecision
    from tests.serving.test_decision_log import reply

    log = DecisionLog(DecisionLogSettings(folder=str(folder), frames="ng+sample"))
    try:
        seqs = []
        for index, ((line, decision, rate, _), pixels) in enumerate(zip(ENTRIES, frames())):
            body = {**reply(index, decision, line=line, score=0.5), "kept": {"reason": "test", "sample_rate": rate}}
            seqs.append(log.submit(PendingDecision(body, NOW + index, pixels, pixels[:, :, 0] > 250)).result(30))
    finally:
        log.close()
    reader = DecisionReader(folder)
    for seq, (_, decision, _, review) in zip(seqs, ENTRIES):
        if review is not None:
            verdict = "NG" if review == "escape" else review
            stored = StoredReview("escape" if review == "escape" else "review", verdict, verdict == decision, [],
                                  None, "k1", "operator", NOW + 100, escape_reported=review == "escape")
            assert write_review(reader.path, seq, stored)
    return reader
