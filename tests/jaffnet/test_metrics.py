import numpy as np
import py_sod_metrics as sod
import pytest

from jaffnet.frames import resize_probability
from jaffnet.metrics import SaliencyMetrics, format_table


def _cases():
    rng = np.random.default_rng(0)
    gt = np.zeros((48, 64), np.uint8)
    gt[10:30, 20:40] = 255
    noisy = np.clip(gt / 255.0 * 0.8 + rng.uniform(0, 0.3, gt.shape), 0, 1)
    shifted = np.roll(gt / 255.0, 5, axis=1)
    return [(noisy, gt), (shifted, gt), (np.zeros(gt.shape), gt)]


def test_metrics_agree_with_pysodmetrics():
    metrics = SaliencyMetrics()
    mae, sm, wfm, em = sod.MAE(), sod.Smeasure(), sod.WeightedFmeasure(), sod.Emeasure()
    for prob, gt in _cases():
        metrics.update(prob, gt)
        for reference in (mae, sm, wfm, em):
            reference.step(prob.astype(np.float64), gt > 127, normalize=False)
    result = metrics.compute()
    assert result["mae"] == pytest.approx(mae.get_results()["mae"])
    assert result["s_measure"] == pytest.approx(sm.get_results()["sm"])
    assert result["weighted_f"] == pytest.approx(wfm.get_results()["wfm"])
    assert result["adaptive_e"] == pytest.approx(em.get_results()["em"]["adp"])
    assert result["mean_e"] == pytest.approx(np.mean(em.get_results()["em"]["curve"]))
    assert 0 <= result["mean_f"] <= result["max_f"] <= 1


def test_hand_computed_mae_and_perfect_prediction():
    gt = np.zeros((10, 10), np.uint8)
    gt[:5] = 255
    prob = np.full((10, 10), 0.25)
    metrics = SaliencyMetrics()
    metrics.update(prob, gt)
    assert metrics.compute()["mae"] == pytest.approx(0.5 * 0.75 + 0.5 * 0.25)
    perfect = SaliencyMetrics()
    perfect.update(gt / 255.0, gt)
    result = perfect.compute()
    assert result["mae"] == 0
    assert result["s_measure"] == pytest.approx(1.0)
    assert result["max_f"] == pytest.approx(1.0)


def test_defect_free_image_is_not_stretched():
    """A faint uniform prediction on a clean frame must stay faint (no min-max stretch)."""
    gt = np.zeros((32, 32), np.uint8)
    prob = np.full((32, 32), 0.01)
    prob[0, 0] = 0.02
    metrics = SaliencyMetrics()
    metrics.update(prob, gt)
    result = metrics.compute()
    assert result["mae"] == pytest.approx(0.01, abs=1e-4)
    assert result["s_measure"] > 0.95


def test_bad_inputs():
    metrics = SaliencyMetrics()
    with pytest.raises(ValueError, match="shape"):
        metrics.update(np.zeros((4, 4)), np.zeros((5, 5)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.update(np.full((4, 4), 2.0), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="no images"):
        metrics.compute()


def test_resize_and_table():
    prob = resize_probability(np.ones((8, 8)), 20, 30)
    assert prob.shape == (20, 30) and prob.max() == pytest.approx(1.0)
    table = format_table({"scratch": {"mae": 0.01, "s_measure": 0.9}, "overall": {"mae": 0.02}}, title="test")
    lines = table.splitlines()
    assert lines[0] == "test" and "MAE" in lines[1] and "Sm" in lines[1]
    assert "0.0100" in lines[3] and "0.9000" in lines[3] and lines[4].startswith("overall")


def test_image_level_metrics_and_auroc():
    from jaffnet.metrics import IMAGE_COLUMNS, ImageLevelMetrics, image_auroc

    metrics = ImageLevelMetrics()
    for score, defective, rejected in [(0.9, True, True), (0.2, True, False), (0.1, False, False), (0.7, False, True),
                                       (0.05, False, False)]:
        metrics.update(score, defective, rejected)
    result = metrics.compute()
    assert (result["true_ng"], result["escapes"], result["overkill"], result["true_ok"]) == (1, 1, 1, 2)
    assert result["escape_rate"] == 0.5 and result["overkill_rate"] == pytest.approx(1 / 3)
    assert result["image_auroc"] == pytest.approx(5 / 6)
    assert image_auroc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5  # ties count half
    assert image_auroc(np.array([0.1]), np.array([True])) is None
    assert result["image_auroc_low"] < result["image_auroc"] < result["image_auroc_high"] < 1
    table = format_table({"overall": result}, columns=IMAGE_COLUMNS)
    assert "AUROC" in table and "0.8333" in table and " 1 " in table and "low95" in table


@pytest.mark.parametrize("defective, good, shift", [(164, 28, 1.2), (81, 15, 1.8), (30, 30, 0.5)])
def test_auroc_interval_covers_the_true_auroc_as_often_as_it_claims(defective, good, shift):
    from statistics import NormalDist

    from jaffnet.metrics import image_auroc, image_auroc_interval

    # scores N(shift, 1) for defective frames and N(0, 1) for good ones: the true AUROC is known
    true_auroc = NormalDist().cdf(shift / np.sqrt(2))
    labels = np.r_[np.ones(defective, bool), np.zeros(good, bool)]
    rng = np.random.default_rng(7)
    covered, trials = 0, 400
    for _ in range(trials):
        scores = np.r_[rng.normal(shift, 1, defective), rng.normal(0, 1, good)]
        low, high = image_auroc_interval(scores, labels)
        assert low < image_auroc(scores, labels) < high
        covered += low <= true_auroc <= high
    assert 0.91 <= covered / trials <= 0.985


def test_auroc_interval_edges():
    from jaffnet.metrics import image_auroc_interval

    labels = np.r_[np.ones(20, bool), np.zeros(5, bool)]
    separated = np.r_[np.linspace(0.6, 1.0, 20), np.linspace(0.0, 0.4, 5)]
    low, high = image_auroc_interval(separated, labels)
    # nothing misranked, yet 5 good frames cannot prove an AUROC of 1
    assert 0.5 < low < 0.95 and high > 0.999
    assert image_auroc_interval(1 - separated, labels)[1] < 0.5  # all misranked: near 0
    narrow = image_auroc_interval(separated, labels, confidence=0.5)
    assert low < narrow[0] < narrow[1] <= high
    tied = image_auroc_interval(np.array([0.5, 0.5]), np.array([True, False]))
    assert tied[0] < 0.5 < tied[1]
    assert image_auroc_interval(np.array([0.1, 0.2]), np.array([True, True])) is None
    with pytest.raises(ValueError, match="confidence"):
        image_auroc_interval(separated, labels, confidence=95)
