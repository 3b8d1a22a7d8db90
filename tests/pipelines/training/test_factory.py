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
