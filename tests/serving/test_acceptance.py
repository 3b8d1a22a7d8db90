"""Frame-by-frame parity between ``jaffnet evaluate`` and an endpoint's answers (no Serve needed)."""

import pytest

from pipelines.evaluation.evaluate import Evaluation
from serving.acceptance import SCORE_TOLERANCE, compare_verdicts

RULE = {"pixel_threshold": 0.5, "image_threshold": 0.4, "min_defect_area_px": 0, "score": "smoothed_max_3x3",
        "calibrated": True}


def _evaluation(scores_and_decisions):
    frames = [{"id": f"f{i}", "defect_class": "x", "label": "NG", "image_score": score, "decision": decision,
               "largest_region_px": 0, "defect_area_px": 0} for i, (score, decision) in enumerate(scores_and_decisions)]
    return Evaluation(model="m", split="test", count=len(frames), contract=None, rule=dict(RULE), rows={},
                      image_rows={}, frames=frames)


def test_a_frame_within_rounding_of_the_threshold_is_reported_not_compared():
    # f1 sits 1e-7 above the cut offline and 1e-7 below it online: batch-size rounding, not a fault
    offline = _evaluation([(0.9, "NG"), (0.4 + 1e-7, "NG"), (0.1, "OK")])
    online = _evaluation([(0.9, "NG"), (0.4 - 1e-7, "OK"), (0.1, "OK")])
    parity = compare_verdicts(offline, online)
    assert parity.holds and parity.compared == 2 and parity.near_threshold == ["f1"]
    assert parity.max_score_difference == pytest.approx(2e-7)
    assert "1 frame(s) within the tolerance of the image threshold, not compared: f1" in parity.describe()


def test_a_different_decision_far_from_the_threshold_breaks_parity():
    offline = _evaluation([(0.9, "NG"), (0.1, "OK")])
    online = _evaluation([(0.9, "OK"), (0.1 + 10 * SCORE_TOLERANCE, "OK")])
    parity = compare_verdicts(offline, online)
    assert not parity.holds and parity.disagreements == ["f0"] and parity.score_mismatches == ["f1"]


def test_evaluations_of_other_frames_or_rules_are_not_compared():
    with pytest.raises(ValueError, match="different frames"):
        compare_verdicts(_evaluation([(0.9, "NG")]), _evaluation([(0.9, "NG"), (0.1, "OK")]))
    other = _evaluation([(0.9, "NG")])
    other.rule = {**RULE, "image_threshold": 0.5}
    with pytest.raises(ValueError, match="different rules"):
        compare_verdicts(_evaluation([(0.9, "NG")]), other)
