import math

import pytest
import torch

from jaffnet.model import JAFFNet
from pipelines.training.config import TrainConfig, load_config
from pipelines.training.factory import build_model


def test_head_prior_starts_every_head_at_that_defect_probability():
    model = build_model(TrainConfig(width=0.125, image_size=32, head_prior=0.03))
    for conv in model.heads.convs:
        assert torch.allclose(conv.bias, torch.full_like(conv.bias, math.log(0.03 / 0.97)))
    model.eval()
    with torch.no_grad():
        # Zero features: every head outputs its bias, so the map starts at the prior.
        features = [torch.zeros(1, conv.in_channels, 4, 4) for conv in model.heads.convs]
        for logits in model.heads(features, (8, 8)):
            assert torch.allclose(torch.sigmoid(logits), torch.full_like(logits, 0.03), atol=1e-6)


def test_without_head_prior_the_model_keeps_its_own_init():
    torch.manual_seed(0)
    trained = build_model(TrainConfig(width=0.125, image_size=32))
    torch.manual_seed(0)
    reference = JAFFNet(width=0.125)
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), reference.state_dict().values()))


def test_head_prior_is_checked():
    assert load_config(None, []).head_prior is None
    for bad in ("head_prior=0", "head_prior=1", "head_prior=1.5"):
        with pytest.raises(ValueError, match="head_prior"):
            load_config(None, [bad])


def test_warmup_ramps_to_lr_then_the_schedule_runs_over_the_remaining_epochs():
    from pipelines.training.factory import build_optimizer, build_scheduler

    cfg = TrainConfig(width=0.125, image_size=32, epochs=6, warmup_epochs=2, lr=1e-3)
    optimizer = build_optimizer(cfg, build_model(cfg))
    scheduler = build_scheduler(cfg, optimizer)
    rates = []
    for _ in range(cfg.epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(1e-4) and rates[1] == pytest.approx(5.5e-4) and rates[2] == pytest.approx(1e-3)
    assert rates[2] > rates[3] > rates[4] > rates[5] > 0  # cosine over the 4 epochs after the warmup
    with pytest.raises(ValueError, match="warmup_epochs"):
        load_config(None, ["epochs=3", "warmup_epochs=3"])


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizers_use_torchs_fused_kernels_for_float32_parameters(name):
    from pipelines.training.factory import build_optimizer

    cfg = TrainConfig(width=0.125, image_size=32, optimizer=name)
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    assert optimizer.defaults["fused"] is True
    sum(side.mean() for side in model(torch.randn(2, 3, 32, 32), side_outputs=True)).backward()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert optimizer.state_dict()["param_groups"][0]["fused"] is True
    assert build_optimizer(cfg, build_model(cfg).double()).defaults["fused"] is None  # no fused kernel: foreach


def test_lr_scales_with_the_global_batch_only_when_asked():
    base = {"width": 0.125, "image_size": 32, "lr": 1e-3, "batch_size": 8, "num_workers": 4,
            "lr_reference_batch": 8}
    assert TrainConfig(**base).effective_lr == 1e-3
    assert TrainConfig(**base, lr_scaling="linear").effective_lr == pytest.approx(4e-3)
    assert TrainConfig(**base, lr_scaling="sqrt").effective_lr == pytest.approx(2e-3)


def test_positive_weighting_raises_the_cost_of_a_missed_defect_pixel_only():
    from jaffnet.losses import HybridLoss

    target = torch.zeros(1, 1, 32, 32)
    target[..., 10:14, 10:14] = 1
    missed = torch.full_like(target, -3.0)  # predicts background everywhere
    plain, weighted = HybridLoss(1, 0, 0), HybridLoss(1, 0, 0, bce_pos_weight=5.0)
    assert weighted(missed, target) > plain(missed, target) * 2
    background_only = torch.zeros_like(target)
    assert weighted(missed, background_only).item() == pytest.approx(plain(missed, background_only).item())
    with pytest.raises(ValueError, match="bce_pos_weight"):
        HybridLoss(bce_pos_weight=0)
