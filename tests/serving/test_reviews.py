"""Reviews in-process: the store (write, replace, filters, retention, an old log), the body's
validation, and the line-quality estimate against hand computations. The routes through the
real Serve app: tests/serving/test_decisions.py."""

import json
import sqlite3

import pytest
from scipy.stats import beta

from pipelines.decision_records import DecisionReader, StoredDecision, StoredReview, write_review
from serving.decision_log import DecisionLog
from serving.reviews import CLASS_CONFIDENCE, EscapeIn, ReviewIn, escape_of, line_quality, quality_of
from tests.serving.test_decision_log import NOW, reply, settings, write


def review(verdict: str, agrees: bool, source: str = "review", **changes) -> StoredReview:
    values = dict(source=source, verdict=verdict, agrees=agrees, regions=[], note=None, reviewer_key_id="k1",
                  reviewer_role="operator", ts=NOW + 100)
    return StoredReview(**{**values, **changes})


@pytest.fixture
def logged(tmp_path):
    """Six decisions with frames, req-0000..5, OK/NG alternating, all on L1."""
    log = DecisionLog(settings(tmp_path, max_records=6))
    seqs = write(log, [reply(i, "NG" if i % 2 else "OK") for i in range(6)])
    yield log, DecisionReader(tmp_path / "log"), seqs
    log.close()


def test_a_review_is_stored_with_its_decision_and_a_later_one_replaces_it(logged):
    _, reader, seqs = logged
    boxes = [{"x": 1, "y": 2, "width": 3, "height": 4}]
    assert write_review(reader.path, seqs[1], review("NG", True, regions=boxes, note="scratch"))
    stored = reader.get("req-0001")
    assert stored.review == review("NG", True, regions=boxes, note="scratch")
    assert write_review(reader.path, seqs[1], review("OK", False, reviewer_key_id="k2"))
    assert reader.get("req-0001").review.reviewer_key_id == "k2" and reader.get("req-0001").review.verdict == "OK"
    assert reader.get("req-0000").review is None
    assert not write_review(reader.path, 10_000, review("OK", True))  # no such decision: nothing stored


def test_reviewed_and_disagrees_filter_the_page(logged):
    _, reader, seqs = logged
    write_review(reader.path, seqs[0], review("OK", True))
    write_review(reader.path, seqs[3], review("OK", False))

    def ids(**filters):
        return [d.request_id for d in reader.page(limit=100, **filters)]

    assert ids(reviewed=True) == ["req-0003", "req-0000"]
    assert ids(reviewed=False) == ["req-0005", "req-0004", "req-0002", "req-0001"]
    assert ids(disagrees=True) == ["req-0003"] and ids(disagrees=False) == ["req-0000"]
    assert ids(disagrees=True, decision="OK") == []
    assert [d.request_id for d in reader.reviewed()] == ["req-0000", "req-0003"]


def test_retention_drops_a_decisions_review_with_it(logged):
    log, reader, seqs = logged
    write_review(reader.path, seqs[0], review("NG", False))
    write(log, [reply(i) for i in range(6, 8)])  # max_records 6: req-0000 and req-0001 go
    with sqlite3.connect(reader.path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM reviews").fetchone()[0] == 0
    assert reader.reviewed() == []


def test_a_log_from_before_reviews_reads_as_unreviewed(tmp_path):
    from serving import decision_log

    old_schema = decision_log._SCHEMA[:decision_log._SCHEMA.index("CREATE TABLE IF NOT EXISTS reviews")]
    (tmp_path / "log").mkdir()
    with sqlite3.connect(tmp_path / "log" / "decisions.sqlite") as connection:
        connection.executescript(old_schema)
        connection.execute("INSERT INTO decisions (request_id, ts, line, model_name, model_version, decision, "
                           "image_score, reply, has_frame, bytes) VALUES ('old-1', ?, 'L1', 'm', '1', 'OK', 0.1, "
                           "?, 0, 10)", (NOW, json.dumps(reply(0, "OK"))))
    reader = DecisionReader(tmp_path / "log")
    assert [(d.request_id, d.review) for d in reader.page()] == [("old-1", None)]
    assert reader.page(reviewed=True) == []


@pytest.mark.parametrize("body, problem", [
    ({"verdict": "ok"}, "verdict"),
    ({"verdict": "OK", "regions": [{"x": 0, "y": 0, "width": 2, "height": 2}]}, "an OK verdict has none"),
    ({"verdict": "NG", "regions": [{"x": "1", "y": 0, "width": 2, "height": 2}]}, "regions.0.x"),
    ({"verdict": "NG", "regions": [{"x": 0, "y": 0, "width": 0, "height": 2}]}, "regions.0.width"),
    ({"verdict": "NG", "regions": [{"x": -1, "y": 0, "width": 2, "height": 2}]}, "regions.0.x"),
    ({"verdict": "NG", "regions": [{"x": 0, "y": 0, "width": 2, "height": 2}] * 33}, "regions"),
    ({"verdict": "NG", "note": "x" * 501}, "note"),
    ({"verdict": "NG", "note": "bell\x07"}, "control characters"),
    ({"verdict": "NG", "reviewer": "someone else"}, "reviewer"),
    ({}, "verdict"),
])
def test_a_bad_review_body_is_refused_naming_the_field(body, problem):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=problem):
        ReviewIn.model_validate_json(json.dumps(body))


def test_a_good_review_body_is_taken_and_its_note_trimmed():
    body = ReviewIn.model_validate_json('{"verdict": "NG", "regions": [{"x": 3, "y": 4, "width": 5, "height": 6}], '
                                        '"note": "  scratch near the edge\\n"}')
    assert body.note == "scratch near the edge" and body.regions[0].width == 5


# -- the estimate, by hand ---------------------------------------------------------------------------

def decided(decision: str, verdict: str, sample_rate: float = 1.0, line: str = "L1",
            source: str = "review") -> StoredDecision:
    kept = {"kept": {"reason": "test", "sample_rate": sample_rate}}
    return StoredDecision(seq=0, request_id="r", ts=NOW, line=line, station=None, part_id=None, model={},
                          decision=decision, image_score=0.5, reply=kept, has_frame=True,
                          review=review(verdict, verdict == decision, source=source,
                                        escape_reported=source == "escape"))


def upper(errors: float, frames: float) -> float:
    return float(beta.ppf(CLASS_CONFIDENCE, errors + 1, frames - errors))


def test_line_quality_equals_a_hand_computation_without_sampling():
    # 100 OK and 10 NG decisions; reviewed: 20 OK frames (1 defective), all 10 NG frames (2 good).
    rows = ([decided("OK", "NG")] + [decided("OK", "OK")] * 19 + [decided("NG", "OK")] * 2
            + [decided("NG", "NG")] * 8)
    figures = quality_of("L1", {"OK": 100, "NG": 10}, rows)
    assert (figures["reviewed"], figures["reviewed_ok"], figures["reviewed_ng"], figures["disagreements"]) == (
        30, 20, 10, 3)
    # p = 1/20 of the OK decisions are defective, q = 2/10 of the NG ones good:
    # escapes 100 * 0.05 = 5, overkills 10 * 0.2 = 2, defective 5 + 10 - 2 = 13, good 2 + 100 - 5 = 97.
    assert figures["escape"]["rate"] == pytest.approx(5 / 13)
    assert figures["overkill"]["rate"] == pytest.approx(2 / 97)
    p_up, q_up = upper(1, 20), upper(2, 10)
    assert figures["passed"]["upper"] == pytest.approx(p_up) and figures["rejected"]["upper"] == pytest.approx(q_up)
    assert figures["escape"]["upper_95"] == pytest.approx(100 * p_up / (100 * p_up + 10 * (1 - q_up)))
    assert figures["overkill"]["upper_95"] == pytest.approx(10 * q_up / (10 * q_up + 100 * (1 - p_up)))
    assert figures["escape"]["note"] is None


def test_line_quality_weights_ok_frames_by_their_sampling_rate():
    # 500 OK decisions: 4 near-threshold frames kept at rate 1 (one defective) and 10 of the random
    # 10 % sample (all good) reviewed; 5 NG decisions, all reviewed, all right.
    rows = [decided("OK", "NG")] + [decided("OK", "OK")] * 3 + [decided("OK", "OK", 0.1)] * 10 + \
        [decided("NG", "NG")] * 5
    figures = quality_of("L1", {"OK": 500, "NG": 5}, rows)
    p = 1 / (4 + 10 * 10)  # weights 1 and 10
    effective = (4 + 100) ** 2 / (4 + 10 * 100)
    assert figures["passed"]["wrong"] == pytest.approx(p)
    assert figures["passed"]["effective_reviews"] == pytest.approx(effective)
    assert figures["escape"]["rate"] == pytest.approx(500 * p / (500 * p + 5))
    assert figures["overkill"]["rate"] == 0
    p_up, q_up = upper(p * effective, effective), upper(0, 5)
    assert figures["escape"]["upper_95"] == pytest.approx(500 * p_up / (500 * p_up + 5 * (1 - q_up)))


def test_without_reviewed_ok_frames_no_rate_is_claimed():
    figures = quality_of("L1", {"OK": 50, "NG": 3}, [decided("NG", "NG")] * 3)  # frames: ng keeps no OK frame
    for rate in ("escape", "overkill"):
        assert figures[rate]["rate"] is None and figures[rate]["upper_95"] is None
        assert "no reviewed OK frame" in figures[rate]["note"] and "ng+sample" in figures[rate]["note"]


def test_lines_are_listed_in_order_with_unreviewed_lines_and_reported_escapes_counted_apart():
    rows = [decided("OK", "NG", line="L2", source="escape"), decided("OK", "OK", line="L2"),
            decided("NG", "NG", line="L2")]
    lines = line_quality({"L2": {"OK": 10, "NG": 1}, "L1": {"OK": 4}, None: {"NG": 1}}, rows)
    assert [entry["line"] for entry in lines] == ["L1", "L2", None]
    l2 = lines[1]
    assert (l2["reviewed"], l2["reported_escapes"], l2["passed"]["reviewed"]) == (3, 1, 1)
    assert l2["escape"]["rate"] == 0  # the sample saw none; the reported escape is counted, not extrapolated
    assert lines[0]["reviewed"] == 0 and lines[0]["escape"]["rate"] is None


def test_an_escape_corrects_an_operators_ok_in_the_sample_and_is_a_report_otherwise():
    reviewed = decided("OK", "OK")
    corrected = escape_of(reviewed, "found at assembly", "k9", "operator", NOW + 200)
    assert (corrected.source, corrected.verdict, corrected.agrees, corrected.escape_reported) == (
        "review", "NG", False, True)
    assert (corrected.note, corrected.reviewer_key_id) == ("found at assembly", "k9")
    unreviewed = StoredDecision(**{**vars(reviewed), "review": None})
    report = escape_of(unreviewed, None, "k9", "admin", NOW + 200)
    assert (report.source, report.verdict, report.escape_reported, report.regions) == ("escape", "NG", True, [])


@pytest.mark.parametrize("body", [{}, {"part_id": "P 1"}, {"part_id": "P-1", "line": "L1;"}, {"part_id": 12},
                                  {"part_id": "P-1", "note": "\x1b[31m"}])
def test_a_bad_escape_body_is_refused(body):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        EscapeIn.model_validate_json(json.dumps(body))


def test_reviews_written_while_the_writer_commits_are_all_kept(logged):
    import threading

    log, reader, seqs = logged
    log.settings = log.settings.model_copy(update={"max_records": 10_000})
    written = []

    def decide():  # batches within the writer's queue (256), each waited for
        for start in range(100, 400, 60):
            written.extend(write(log, [reply(i) for i in range(start, start + 60)]))

    writing = threading.Thread(target=decide)
    writing.start()
    for index, seq in enumerate(seqs * 5):  # 30 reviews against 300 decisions being committed
        assert write_review(reader.path, seq, review("NG" if index % 2 else "OK", index % 3 == 0))
    writing.join(60)
    assert len(written) == 300 and len(reader.reviewed()) == 6 and reader.total() == 306
