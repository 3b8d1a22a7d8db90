from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from jaffnet.metrics import SaliencyMetrics
from jaffnet.decision import DecisionRule
from pipelines.evaluation.calibration import (
    CalibrationRecord,
    Objective,
    ThresholdCalibrator,
    calibrate_image_threshold,
    frames_needed,
    upper_bound,
)
from pipelines.training.loop import owns_sample
from pipelines.evaluation.scoring import EndpointVerdict, score_predictions


@dataclass
class FakeSample:
    id: str
    defect_class: str
    image: np.ndarray
    mask: np.ndarray


def _square_sample(sample_id: str, defect_class: str, size: int = 40) -> FakeSample:
    mask = np.zeros((size, size), np.uint8)
    if defect_class != "clean":
        mask[10:20, 12:24] = 255
    return FakeSample(sample_id, defect_class, np.full((size, size, 3), 90, np.uint8), mask)


def test_calibrated_threshold_separates_a_clean_split():
    calibrator = ThresholdCalibrator()
    mask = np.zeros((32, 32), bool)
    mask[8:16, 8:16] = True
    rng = np.random.default_rng(0)
    calibrator.update(np.where(mask, 0.7, 0.2) + rng.uniform(0, 0.05, mask.shape), mask)
    threshold = calibrator.compute()
    assert 0.25 < threshold <= 0.7  # between background (<= 0.25) and defect (>= 0.7) scores


def test_false_alarms_on_defect_free_frames_raise_the_threshold():
    mask = np.zeros((32, 32), bool)
    mask[8:16, 8:16] = True
    defective = np.where(mask, 0.9, 0.1)
    clean = np.zeros((32, 32))
    clean[:16] = 0.6  # a model that fires on half of a good part

    only_defective = ThresholdCalibrator()
    only_defective.update(defective, mask)
    with_clean = ThresholdCalibrator()
    with_clean.update(defective, mask)
    with_clean.update(clean, np.zeros_like(mask))
    assert only_defective.compute() <= 0.6 < with_clean.compute() <= 0.9


def test_a_split_without_defect_pixels_keeps_the_default_threshold():
    calibrator = ThresholdCalibrator()
    calibrator.update(np.full((8, 8), 0.3), np.zeros((8, 8), bool))
    assert calibrator.compute() == 0.5


def test_scores_frame_size_maps_per_class_with_image_level_rows(tmp_path):
    samples = [_square_sample("a", "scratch"), _square_sample("b", "scratch"), _square_sample("c", "clean")]
    probs = {s.id: (s.mask / 255 * 0.8 + 0.05).astype(np.float32) for s in samples}
    scores = score_predictions(probs, samples, overlay_dir=tmp_path, num_overlays=5)
    assert set(scores.rows) == set(scores.image_rows) == {"scratch", "clean", "overall"} and scores.count == 3
    assert scores.overall["mae"] < 0.06 and scores.rows["scratch"]["max_f"] > 0.9
    reference = SaliencyMetrics()
    for s in samples:
        reference.update(probs[s.id], s.mask)
    assert scores.overall == pytest.approx(reference.compute())
    # calibrated on this split: both defective frames NG, the clean one OK
    assert scores.rule.calibrated and 0.05 < scores.rule.image_threshold < 0.85
    overall = dict(scores.image_rows["overall"])
    low, high = overall.pop("image_auroc_low"), overall.pop("image_auroc_high")
    assert overall == {"true_ng": 2, "overkill": 0, "escapes": 0, "true_ok": 1,
                       "overkill_rate": 0.0, "escape_rate": 0.0, "image_auroc": 1.0}
    assert low < 0.5 and high > 0.95  # three frames, none misranked, prove next to nothing
    assert "escape_rate" not in scores.image_rows["clean"] and "overkill_rate" not in scores.image_rows["scratch"]
    # a class of defective frames only is ranked against the split's good frames; the good class has no AUROC
    assert scores.image_rows["scratch"]["image_auroc"] == 1.0 and "image_auroc" not in scores.image_rows["clean"]
    assert [p.name for p in scores.overlays] == ["00_a.png", "01_b.png"]  # defect images only
    panel = cv2.imread(str(scores.overlays[0]))
    assert panel.shape == (40, 120, 3)  # image | truth | heat map


def test_maps_not_at_the_frame_size_are_refused():
    sample = _square_sample("a", "scratch")
    with pytest.raises(ValueError, match="frame's own size"):
        score_predictions({"a": np.zeros((32, 32), np.float32)}, [sample])


def test_a_stored_rule_is_applied_not_recalibrated():
    samples = [_square_sample("a", "scratch"), _square_sample("c", "clean")]
    probs = {"a": np.full((40, 40), 0.4, np.float32), "c": np.full((40, 40), 0.3, np.float32)}
    strict = DecisionRule(pixel_threshold=0.5, image_threshold=0.35)
    scores = score_predictions(probs, samples, rule=strict)
    assert scores.rule == strict
    assert scores.image_rows["overall"]["true_ng"] == 1 and scores.image_rows["overall"]["true_ok"] == 1
    lenient = score_predictions(probs, samples, rule=DecisionRule(pixel_threshold=0.5, image_threshold=0.25))
    assert lenient.image_rows["overall"]["overkill"] == 1


def test_min_defect_area_keeps_small_spots_ok():
    samples = [_square_sample("a", "scratch"), _square_sample("c", "clean")]
    spot = np.zeros((40, 40), np.float32)
    spot[5:8, 5:8] = 0.9  # a 9-pixel blob on the clean frame
    probs = {"a": (samples[0].mask / 255 * 0.9).astype(np.float32), "c": spot}
    rule = DecisionRule(pixel_threshold=0.5, image_threshold=0.5, min_defect_area_px=20)
    scores = score_predictions(probs, samples, rule=rule)
    assert scores.image_rows["overall"]["overkill"] == 0 and scores.image_rows["overall"]["true_ng"] == 1


def test_endpoint_verdicts_are_scored_as_answered():
    samples = [_square_sample("a", "scratch"), _square_sample("c", "clean")]
    probs = {s.id: np.zeros((40, 40), np.float32) for s in samples}
    verdicts = {"a": EndpointVerdict("OK", 0.1), "c": EndpointVerdict("NG", 0.9)}
    scores = score_predictions(probs, samples, rule=DecisionRule(0.5, 0.5), verdicts=verdicts)
    assert scores.image_rows["overall"]["escapes"] == 1 and scores.image_rows["overall"]["overkill"] == 1
    assert scores.image_rows["overall"]["image_auroc"] == 0.0


def test_image_threshold_trades_overkill_against_escapes():
    scores = [0.1, 0.2, 0.3, 0.6, 0.35, 0.7, 0.8]
    defective = [False, False, False, False, True, True, True]
    balanced = calibrate_image_threshold(scores, defective)
    assert 0.3 < balanced <= 0.35  # every defect NG; one good part (0.6) rejected: 1/4 < 1/3
    overkill_averse = calibrate_image_threshold(scores, defective, objective=Objective("escape_cost", 0.5))
    assert 0.6 < overkill_averse <= 0.7  # the good part at 0.6 stays OK, the defect at 0.35 escapes
    assert calibrate_image_threshold([0.2, 0.4], [True, True]) is None


def test_image_threshold_meets_an_escape_or_overkill_target():
    scores = [0.1, 0.2, 0.3, 0.6, 0.35, 0.7, 0.8, 0.9]
    defective = [False, False, False, False, True, True, True, True]
    no_escape = calibrate_image_threshold(scores, defective, objective=Objective("max_escape_rate", 0.0))
    assert 0.3 < no_escape <= 0.35  # every defect NG, the lowest overkill that allows (1 of 4 good frames)
    quarter = calibrate_image_threshold(scores, defective, objective=Objective("max_escape_rate", 0.25))
    assert 0.6 < quarter <= 0.7  # one of 4 defects may escape: no good frame rejected
    no_overkill = calibrate_image_threshold(scores, defective, objective=Objective("max_overkill_rate", 0.0))
    assert 0.6 < no_overkill <= 0.7
    with pytest.raises(ValueError, match="no image threshold meets max_escape_rate"):  # two defects fail the area
        calibrate_image_threshold(scores, defective, objective=Objective("max_escape_rate", 0.1),
                                  passes_area=[True] * 6 + [False, False])
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="max_escape_rate must be"):
            Objective("max_escape_rate", bad)
    with pytest.raises(ValueError, match="one calibration target"):
        Objective.choose(max_escape_rate=0.05, escape_cost=2.0)


def test_upper_bounds_are_clopper_pearson():
    assert upper_bound(0, 60) == pytest.approx(1 - 0.05 ** (1 / 60))  # zero errors: 1 - alpha^(1/n), ~3/n
    assert upper_bound(0, 60) < 0.05 < upper_bound(0, 58)
    assert frames_needed(0.05) == 59 and frames_needed(0.01) == 299
    assert upper_bound(3, 100) == pytest.approx(0.0757, abs=1e-4)  # scipy's exact binomial bound
    assert upper_bound(5, 5) == 1.0 and upper_bound(0, 0) is None


def test_a_calibration_set_too_small_for_the_target_says_so():
    samples, probs = _varied_split(24)  # 16 defective frames: an escape target of 5 % cannot be supported
    scores = score_predictions(probs, samples, objective=Objective("max_escape_rate", 0.05),
                               calibration_set={"split": "val"})
    record = scores.calibration
    assert record.method == "max_escape_rate" and record.target == 0.05 and record.calibration_set == {"split": "val"}
    assert (record.defective_frames, record.good_frames) == (16, 8)
    assert record.escapes / record.defective_frames <= 0.05
    assert record.escape_upper95 == pytest.approx(upper_bound(record.escapes, 16))
    assert len(record.warnings) == 1 and "cannot support escape rate <= 5.00%" in record.warnings[0]
    assert "59 defective frames" in record.warnings[0]
    assert CalibrationRecord.from_dict(record.to_dict()) == record
    frames = scores.frames
    assert {f.decision for f in frames.values()} <= {"OK", "NG"}
    assert sum(f.decision == "OK" and f.defective for f in frames.values()) == record.escapes


def test_training_falls_back_to_balanced_error_when_val_is_too_small():
    from pipelines.evaluation.scoring import SplitAccumulator

    samples, probs = _varied_split(24)
    accumulator = SplitAccumulator()
    for sample in samples:
        accumulator.add(sample.id, sample.defect_class, probs[sample.id], sample.mask)
    scores = accumulator.finish(objective=Objective("max_escape_rate", 0.05), fallback=True)
    assert scores.calibration.method == "escape_cost" and scores.calibration.target == 1.0
    assert "only 16 defective frames, 59 needed" in scores.calibration.warnings[0]
    assert scores.rule == score_predictions(probs, samples).rule


def test_mismatched_predictions_are_an_error():
    samples = [_square_sample("a", "scratch"), _square_sample("b", "scratch")]
    with pytest.raises(ValueError, match="1 samples without a prediction \\(b\\)"):
        score_predictions({"a": np.zeros((40, 40), np.float32)}, samples)
    with pytest.raises(ValueError, match="predictions without a sample \\(z\\)"):
        score_predictions({"a": np.zeros((40, 40)), "b": np.zeros((40, 40)), "z": np.zeros((40, 40))}, samples)
    with pytest.raises(ValueError, match="no samples"):
        score_predictions({}, [])


@pytest.mark.parametrize("world", [1, 2, 3])
def test_validation_sharding_covers_every_id_once(world):
    ids = [f"synth_{i:06d}" for i in range(50)]
    owners = [[rank for rank in range(world) if owns_sample(i, rank, world)] for i in ids]
    assert all(len(o) == 1 for o in owners)
    if world > 1:
        assert len({o[0] for o in owners}) == world


def _varied_split(count: int = 24) -> tuple[list[FakeSample], dict[str, np.ndarray]]:
    """Frames of several sizes and classes, with noisy predictions (some clean frames with false alarms)."""
    rng = np.random.default_rng(7)
    samples, probs = [], {}
    for i in range(count):
        height, width = 40 + 8 * (i % 3), 48 + 16 * (i % 2)
        defect_class = ("scratch", "pit", "clean")[i % 3]
        mask = np.zeros((height, width), np.uint8)
        if defect_class != "clean":
            mask[10:14 + i % 9, 12:20 + i % 7] = 255
        samples.append(FakeSample(f"frame-{i:03d}", defect_class, np.full((height, width, 3), 90, np.uint8), mask))
        noise = rng.uniform(0, 0.3, (height, width))
        probs[samples[-1].id] = np.clip(noise + (mask > 0) * rng.uniform(0.3, 0.7), 0, 1).astype(np.float32)
    return samples, probs


@pytest.mark.parametrize("min_defect_area_px", [0, 12])
def test_ranks_scoring_their_own_frames_then_merging_equal_one_pass(min_defect_area_px):
    """What the training loop does with 3 ranks equals scoring every frame on one (to 1e-6)."""
    from pipelines.evaluation.scoring import SplitAccumulator

    samples, probs = _varied_split()
    one_pass = score_predictions(probs, samples, min_defect_area_px=min_defect_area_px, objective=Objective("escape_cost", 2.0))

    world = 3
    parts = [SplitAccumulator() for _ in range(world)]
    for sample in samples:
        rank = next(r for r in range(world) if owns_sample(sample.id, r, world))
        parts[rank].add(sample.id, sample.defect_class, probs[sample.id], sample.mask)
    assert all(part.frames for part in parts)  # each rank really had a share
    if min_defect_area_px:  # the pooled pixel threshold from every rank's histogram, regions on each rank
        pooled = SplitAccumulator()
        for part in parts:
            pooled.calibrator.merge(part.calibrator)
        for part in parts:
            part.measure_regions(probs.__getitem__, pooled.pixel_threshold())
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    parallel = merged.finish(min_defect_area_px=min_defect_area_px, objective=Objective("escape_cost", 2.0))

    assert parallel.rule == one_pass.rule and parallel.count == one_pass.count == len(samples)
    for rows, reference in ((parallel.rows, one_pass.rows), (parallel.image_rows, one_pass.image_rows)):
        assert rows.keys() == reference.keys()
        for name, row in rows.items():
            for key, value in row.items():
                expected = reference[name][key]
                assert (value is None and expected is None) or abs(value - expected) <= 1e-6, (name, key)


def test_a_frame_scored_on_two_ranks_is_an_error():
    from pipelines.evaluation.scoring import SplitAccumulator

    samples, probs = _varied_split(2)
    first, second = SplitAccumulator(), SplitAccumulator()
    for part in (first, second):
        part.add(samples[0].id, samples[0].defect_class, probs[samples[0].id], samples[0].mask)
    with pytest.raises(ValueError, match="scored twice"):
        first.merge(second)


def test_each_defect_class_is_ranked_against_all_good_frames():
    samples = [_square_sample(f"s{i}", "scratch") for i in range(3)] + \
        [_square_sample(f"h{i}", "hole") for i in range(3)] + [_square_sample(f"g{i}", "clean") for i in range(4)]
    # holes score above every good frame; scratches below two of them
    peaks = {"s0": 0.30, "s1": 0.50, "s2": 0.70, "h0": 0.8, "h1": 0.85, "h2": 0.9,
             "g0": 0.1, "g1": 0.2, "g2": 0.6, "g3": 0.75}
    probs = {s.id: np.where(s.mask > 0, peaks[s.id], 0.0).astype(np.float32) if s.defect_class != "clean"
             else np.full(s.mask.shape, peaks[s.id], np.float32) for s in samples}
    rows = score_predictions(probs, samples).image_rows
    assert rows["hole"]["image_auroc"] == 1.0
    assert rows["scratch"]["image_auroc"] == pytest.approx((2 + 2 + 3) / 12)  # pairs won of 3 x 4
    assert rows["scratch"]["image_auroc_low"] < rows["scratch"]["image_auroc"] < rows["scratch"]["image_auroc_high"]
    assert rows["overall"]["image_auroc"] == pytest.approx((7 + 12) / 24)
    assert rows["scratch"]["escapes"] + rows["scratch"]["true_ng"] == 3  # its counts stay its own

    from pipelines.evaluation.evaluate import Evaluation
    table = Evaluation.from_scores(score_predictions(probs, samples), None, "m", "test").table()
    assert "AUROC of hole, scratch (no good frames of their own): each class's frames ranked against " \
           "the split's 4 good frames" in table


def test_each_frame_is_scored_once_for_the_overall_and_its_class_row(monkeypatch):
    import pipelines.evaluation.scoring as scoring
    from jaffnet.metrics import image_saliency

    calls = []
    monkeypatch.setattr(scoring, "image_saliency", lambda *args: calls.append(1) or image_saliency(*args))
    samples = [_square_sample("a", "scratch"), _square_sample("b", "patch"), _square_sample("c", "clean")]
    probs = {s.id: (s.mask / 255 * 0.6 + 0.1).astype(np.float32) for s in samples}
    scores = score_predictions(probs, samples)
    assert len(calls) == 3
    for s in samples:  # each class row holds exactly what a fresh accumulator of its frame computes
        alone = SaliencyMetrics()
        alone.update(probs[s.id], s.mask)
        assert scores.rows[s.defect_class] == pytest.approx(alone.compute())
