"""The sampling-weighted estimate against operators' reviews, by hand: the sample and its weights,
escapes and overkill per line with bounds on Kish's effective counts, and the weighted cut."""

from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import beta

from pipelines.decision_records import StoredDecision, StoredReview
from pipelines.evaluation.calibration import (CalibrationRecord, Objective, RateCount, calibrate_image_threshold,
                                              upper_bound)
from pipelines.evaluation.line_reviews import ALL_LINES, LogSelection, ReviewSample, errors_by_line
from tests.pipelines.evaluation.reviewed_log import ENTRIES, NOW, REVIEWED, WEIGHTS, request_id


def stored(index: int, verdict: str | None = None) -> StoredDecision:
    line, decision, rate, review = ENTRIES[index]
    review = verdict or review
    kind = "escape" if review == "escape" else "review"
    truth = "NG" if review == "escape" else review
    return StoredDecision(
        seq=index + 1, request_id=request_id(index), ts=NOW + index, line=line, station=None, part_id=None,
        model={}, decision=decision, image_score=0.5, reply={"kept": {"reason": "test", "sample_rate": rate}},
        has_frame=True, review=None if review is None else StoredReview(kind, truth, truth == decision, [], None,
                                                                        "k1", "operator", NOW + 100))


def sample_of(rows) -> ReviewSample:
    sample = ReviewSample()
    for row in rows:
        sample.offer(row)
    return sample


def upper(errors: float, frames: float) -> float:
    return float(beta.ppf(0.95, errors + 1, frames - errors))


def effective(weights) -> float:
    return float(sum(weights) ** 2 / sum(w * w for w in weights))


def test_the_sample_is_the_reviewed_kept_frames_weighted_per_line_and_logged_decision():
    sample = sample_of(stored(i) for i in range(len(ENTRIES)))
    assert [row.request_id for row in sample.rows] == [request_id(i) for i in REVIEWED]
    assert (sample.unreviewed, sample.reported_escapes) == (5, 1)  # the escape report stands for nothing
    assert sample.weights() == pytest.approx([float(WEIGHTS[i]) for i in REVIEWED])
    assert sample.truth_ng().tolist() == [ENTRIES[i][3] == "NG" for i in REVIEWED]
    flipped = sample_of(stored(i, "OK" if i == 0 else None) for i in range(len(ENTRIES)))
    assert flipped.digest() != sample.digest() and sample_of(stored(i) for i in range(14)).digest() == sample.digest()


def test_escapes_and_overkill_per_line_equal_a_hand_computation():
    sample = sample_of(stored(i) for i in range(len(ENTRIES)))
    figures = errors_by_line(sample.lines(), sample.truth_ng(), sample.logged_ng(), sample.weights())
    assert list(figures) == ["L1", "L2", ALL_LINES]
    w = WEIGHTS
    # L1: defective 0 (logged NG), 4 and 8 (logged OK: escapes); good 1 (logged NG: overkill), 6 and 7.
    l1 = figures["L1"]
    assert (l1.escape.errors, l1.escape.frames, l1.overkill.errors, l1.overkill.frames) == (2, 3, 1, 3)
    escape = (w[4] + w[8]) / (w[0] + w[4] + w[8])
    assert escape == Fraction(572, 634) and l1.escape.rate == pytest.approx(float(escape))
    n = effective([w[0], w[4], w[8]])
    assert l1.escape.effective == pytest.approx(n)
    assert l1.escape.upper == pytest.approx(upper(float(escape) * n, n))
    overkill = w[1] / (w[1] + w[6] + w[7])
    assert l1.overkill.rate == pytest.approx(float(overkill))
    n = effective([w[1], w[6], w[7]])
    assert l1.overkill.upper == pytest.approx(upper(float(overkill) * n, n))
    # L2: its one defective frame caught, its one good frame passed.
    assert (figures["L2"].escape.rate, figures["L2"].overkill.rate) == (0, 0)
    assert figures["L2"].escape.upper == pytest.approx(upper(0, 1))
    every = figures[ALL_LINES]
    assert every.escape.rate == pytest.approx(float((w[4] + w[8]) / (w[0] + w[4] + w[8] + w[11])))
    assert every.overkill.rate == pytest.approx(float(w[1] / (w[1] + w[6] + w[7] + w[12])))


def test_unweighted_counts_are_the_plain_counts():
    plain = RateCount.of([True, False, False, False])
    assert plain == RateCount(1, 4) and plain.rate == 0.25 and plain.upper == upper_bound(1, 4)
    ones = RateCount.of([True, False, False, False], [1.0] * 4)
    assert (ones.rate, ones.effective) == (0.25, 4) and ones.upper == pytest.approx(plain.upper)
    empty = RateCount.of([], [])
    assert (empty.rate, empty.upper, empty.effective) == (None, None, 0.0)


def test_weights_move_the_cut_to_catch_a_heavy_defective_frame():
    # Scores of 6 frames; the defective one at 0.3 stands for 20 frames (a sampled OK frame).
    scores = [0.1, 0.2, 0.3, 0.4, 0.8, 0.9]
    defective = [False, False, True, False, True, True]
    objective = Objective("max_escape_rate", 0.4)
    assert calibrate_image_threshold(scores, defective, objective=objective) == pytest.approx(0.6)  # 1/3 escape
    weights = [1, 1, 20, 1, 1, 1]  # escaping it would be 20/22 of the defective frames
    assert calibrate_image_threshold(scores, defective, objective=objective, weights=weights) == pytest.approx(0.25)
    assert calibrate_image_threshold(scores, defective, objective=objective, weights=[1] * 6) == pytest.approx(0.6)

    record = CalibrationRecord.measure(objective, defective, np.asarray(scores) >= 0.25, {"decision_log": "log"},
                                       weights=weights)
    assert (record.escapes, record.defective_frames, record.overkill, record.good_frames) == (0, 3, 1, 3)
    assert record.overkill_rate == pytest.approx(1 / 3) and record.effective_defective == pytest.approx(
        effective([20, 1, 1]))
    assert record.escape_upper95 == pytest.approx(upper(0, effective([20, 1, 1])))
    assert CalibrationRecord.from_dict(record.to_dict()) == record
    assert "effective" in "\n".join(record.summary()) and any("effective" in w for w in record.warnings)


def test_a_log_selection_describes_itself():
    selection = LogSelection("/var/log/line", "L1", since=0.0)
    assert selection.describe() == {"decision_log": "/var/log/line", "line": "L1", "since": "1970-01-01T00:00:00.000Z",
                                    "until": "end"}
