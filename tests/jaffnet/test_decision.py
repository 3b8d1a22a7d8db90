import numpy as np
import pytest

from jaffnet.decision import DecisionRule, image_score, judge, rule_from_metadata


def test_a_single_hot_pixel_does_not_make_a_high_image_score():
    probability = np.zeros((32, 32), np.float32)
    probability[10, 10] = 1.0
    assert image_score(probability) == pytest.approx(1 / 9)
    probability[20:23, 20:23] = 0.9  # a 3x3 defect keeps its peak
    assert image_score(probability) == pytest.approx(0.9)


def test_the_rule_and_its_reason():
    probability = np.zeros((40, 40), np.float32)
    probability[5:10, 5:10] = 0.8
    rule = DecisionRule(pixel_threshold=0.5, image_threshold=0.6)
    verdict = judge(probability, rule)
    assert verdict.decision == "NG" and "image_score 0.8000 >= image_threshold 0.6000" in verdict.reason
    assert verdict.defect_area_px == verdict.largest_region_px == 25 and verdict.region_count == 1
    assert judge(probability, rule.with_overrides(image_threshold=0.9)).decision == "OK"
    area_rule = DecisionRule(pixel_threshold=0.5, image_threshold=0.6, min_defect_area_px=30)
    verdict = judge(probability, area_rule)
    assert verdict.decision == "OK" and "largest region 25 px < min_defect_area_px 30" in verdict.reason


def test_rule_round_trip_and_legacy_models():
    rule = DecisionRule(pixel_threshold=0.4, image_threshold=0.55, min_defect_area_px=3)
    assert DecisionRule.from_dict(rule.to_dict()) == rule
    legacy = rule_from_metadata({"threshold": 0.3, "image_size": 64})
    assert legacy.pixel_threshold == legacy.image_threshold == 0.3 and not legacy.calibrated


@pytest.mark.parametrize("values", [{"pixel_threshold": 1.5, "image_threshold": 0.5},
                                    {"pixel_threshold": 0.5, "image_threshold": 0.5, "min_defect_area_px": -1},
                                    {"pixel_threshold": 0.5, "image_threshold": 0.5, "score": "mean"}])
def test_bad_rules_are_refused(values):
    with pytest.raises(ValueError):
        DecisionRule.from_dict(values)


def _probabilities() -> np.ndarray:
    p = np.full((50, 80), 0.1, dtype=np.float32)
    p[5:10, 10:30] = 0.8  # 5x20 region, peak 0.95
    p[7, 12] = 0.95
    p[40:42, 70:72] = 0.6  # 2x2 region
    return p


def test_regions_are_connected_components_above_the_pixel_threshold():
    verdict = judge(_probabilities(), DecisionRule(pixel_threshold=0.5, image_threshold=0.5))
    assert verdict.decision == "NG"
    assert verdict.defect_score == np.float32(0.95)
    assert verdict.defect_area_px == 100 + 4 and verdict.largest_region_px == 100
    assert verdict.defect_area_ratio == (100 + 4) / (50 * 80)
    assert verdict.region_count == 2
    big, small = (r.to_dict() for r in verdict.regions)  # largest first
    assert big == {"bbox": {"x": 10, "y": 5, "width": 20, "height": 5}, "area_px": 100,
                   "max_probability": round(float(np.float32(0.95)), 6)}
    assert small["bbox"] == {"x": 70, "y": 40, "width": 2, "height": 2} and small["area_px"] == 4


def test_below_the_image_threshold_is_ok_and_the_region_list_is_capped():
    assert judge(_probabilities(), DecisionRule(pixel_threshold=0.5, image_threshold=0.96)).decision == "OK"
    capped = judge(_probabilities(), DecisionRule(pixel_threshold=0.5, image_threshold=0.5), max_regions=1)
    assert capped.region_count == 2 and len(capped.regions) == 1
