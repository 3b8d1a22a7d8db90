"""The INT8 accuracy gate: passes a faithful candidate, fails (and names the frames of) a wrong one."""

import json

import numpy as np
import pytest

from jaffnet.contract import InputContract
from jaffnet.decision import DecisionRule
from jaffnet.metrics import METRIC_COLUMNS
from pipelines.quantization_gate import GateLimits, GateReport, mask_iou, run_gate

SIZE = 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, ray_session):
    """The tiny dataset's test frames, a width-0.25 random model, its fp32 predictor and a rule
    calibrated on its own fp32 maps (as training stores one)."""
    import torch

    from jaffnet.frames import predict_frames
    from jaffnet.inference import build_predictor
    from jaffnet.model import JAFFNet
    from pipelines.data.dataset import iter_samples
    from pipelines.evaluation.scoring import score_predictions
    from tests.datasets import make_tiny_dataset

    dataset = make_tiny_dataset(tmp_path_factory.mktemp("gate-data"), count=24, size=SIZE)
    torch.manual_seed(0)
    model = JAFFNet(width=0.25).eval()
    contract = InputContract(image_size=SIZE)
    fp32 = build_predictor(model, "eager")
    samples = list(iter_samples(dataset, "test"))
    maps = {str(s.id): p for s, p in predict_frames(samples, contract, fp32)}
    rule = score_predictions(maps, samples, per_class=False).rule
    return {"dataset": dataset, "model": model, "contract": contract, "fp32": fp32, "samples": samples,
            "rule": rule, "maps": maps}


def test_mask_iou_counts_two_empty_masks_as_agreement():
    empty = np.zeros((4, 4), bool)
    half = empty.copy()
    half[:2] = True
    assert mask_iou(empty, empty) == 1.0
    assert mask_iou(half, empty) == 0.0
    assert mask_iou(half, half) == 1.0
    quarter = empty.copy()
    quarter[:1] = True
    assert mask_iou(half, quarter) == pytest.approx(0.5)


def test_a_candidate_identical_to_fp32_passes_every_check(tiny):
    report = run_gate(tiny["samples"], tiny["contract"], tiny["rule"], tiny["fp32"], tiny["fp32"])
    assert report.passed and report.count == len(tiny["samples"])
    names = [check.name for check in report.checks]
    assert names == [f"|delta| {m}" for m in METRIC_COLUMNS] + ["verdict agreement", "mean mask IoU"]
    assert all(check.passed for check in report.checks)
    assert report.flip_count == 0 and report.low_iou_count == 0 and report.max_abs_difference == 0
    assert set(METRIC_COLUMNS) <= set(report.reference_metrics)
    assert "GATE PASSED" in report.format()
    # The report round-trips through its JSON.
    assert GateReport.from_dict(json.loads(report.to_json())) == report


def test_a_noisy_candidate_fails_the_mask_and_metric_checks(tiny):
    fp32 = tiny["fp32"]
    rng = np.random.default_rng(0)

    def noisy(batch):
        probability = fp32(batch)
        return np.clip(probability + rng.normal(0, 0.2, probability.shape), 0, 1).astype(np.float32)

    report = run_gate(tiny["samples"], tiny["contract"], tiny["rule"], fp32, noisy)
    failed = {check.name for check in report.checks if not check.passed}
    assert not report.passed
    assert "mean mask IoU" in failed and any(name.startswith("|delta| ") for name in failed)
    assert report.low_iou_count > 0 and report.low_iou_frames[0].mask_iou < 0.95
    assert "GATE FAILED" in report.format()


def test_a_candidate_with_a_shifted_operating_point_flips_verdicts_and_names_them(tiny):
    from jaffnet.decision import judge

    fp32, rule = tiny["fp32"], tiny["rule"]
    # A candidate whose operating point is off: its maps are pushed across the image
    # threshold, towards the verdict fp32 gives least often.
    ng = sum(judge(p, rule).decision == "NG" for p in tiny["maps"].values())
    shift = 1.0 if ng <= len(tiny["maps"]) / 2 else -1.0

    def shifted(batch):
        return np.clip(fp32(batch) + shift, 0, 1).astype(np.float32)

    report = run_gate(tiny["samples"], tiny["contract"], rule, fp32, shifted)
    agreement = next(c for c in report.checks if c.name == "verdict agreement")
    assert not report.passed and not agreement.passed
    assert report.flip_count == len(report.verdict_flips) > 0
    flip = report.verdict_flips[0]
    assert flip.reference != flip.candidate
    assert {f.id for f in report.verdict_flips} <= {str(s.id) for s in tiny["samples"]}
    assert f"{report.flip_count} verdict flip(s)" in report.format()


def test_limits_are_the_callers(tiny):
    fp32 = tiny["fp32"]

    def slightly_off(batch):
        return np.clip(fp32(batch) * 0.98, 0, 1).astype(np.float32)

    loose = run_gate(tiny["samples"], tiny["contract"], tiny["rule"], fp32, slightly_off)
    strict = run_gate(tiny["samples"], tiny["contract"], tiny["rule"], fp32, slightly_off,
                      limits=GateLimits(metric_tolerance=0.0, min_verdict_agreement=1.0, min_mean_mask_iou=1.0))
    assert not strict.passed
    assert strict.limits == {"metric_tolerance": 0.0, "min_verdict_agreement": 1.0, "min_mean_mask_iou": 1.0}
    assert loose.limits == {"metric_tolerance": 0.01, "min_verdict_agreement": 0.99, "min_mean_mask_iou": 0.95}


def test_an_empty_split_is_an_error(tiny):
    with pytest.raises(ValueError, match="no frames"):
        run_gate([], tiny["contract"], DecisionRule(0.5, 0.5), tiny["fp32"], tiny["fp32"])
