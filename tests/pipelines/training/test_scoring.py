from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from jaffnet.metrics import SaliencyMetrics
from pipelines.training.calibration import ThresholdCalibrator
from pipelines.training.loop import owns_sample
from pipelines.training.scoring import score_predictions


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


def test_scores_at_original_size_per_class(tmp_path):
    samples = [_square_sample("a", "scratch"), _square_sample("b", "scratch"), _square_sample("c", "clean")]
    # Predictions at a smaller "training size"; perfect after resizing back.
    probs = {s.id: cv2.resize((s.mask / 255).astype(np.float32), (32, 32), interpolation=cv2.INTER_NEAREST)
             for s in samples}
    scores = score_predictions(probs, samples, overlay_dir=tmp_path, num_overlays=5)
    assert set(scores.rows) == {"scratch", "clean", "overall"} and scores.count == 3
    assert scores.overall["mae"] < 0.02 and scores.rows["scratch"]["max_f"] > 0.9
    reference = SaliencyMetrics()
    for s in samples:
        reference.update(cv2.resize(probs[s.id], (40, 40), interpolation=cv2.INTER_LINEAR).clip(0, 1), s.mask)
    assert scores.overall == pytest.approx(reference.compute())
    assert [p.name for p in scores.overlays] == ["00_a.png", "01_b.png"]  # defect images only
    panel = cv2.imread(str(scores.overlays[0]))
    assert panel.shape == (40, 120, 3)  # image | truth | heat map


def test_mismatched_predictions_are_an_error():
    samples = [_square_sample("a", "scratch"), _square_sample("b", "scratch")]
    with pytest.raises(ValueError, match="1 samples without a prediction \\(b\\)"):
        score_predictions({"a": np.zeros((8, 8), np.float32)}, samples)
    with pytest.raises(ValueError, match="predictions without a sample \\(z\\)"):
        score_predictions({"a": np.zeros((8, 8)), "b": np.zeros((8, 8)), "z": np.zeros((8, 8))}, samples)
    with pytest.raises(ValueError, match="no samples"):
        score_predictions({}, [])


@pytest.mark.parametrize("world", [1, 2, 3])
def test_validation_sharding_covers_every_id_once(world):
    ids = [f"synth_{i:06d}" for i in range(50)]
    owners = [[rank for rank in range(world) if owns_sample(i, rank, world)] for i in ids]
    assert all(len(o) == 1 for o in owners)
    if world > 1:
        assert len({o[0] for o in owners}) == world
