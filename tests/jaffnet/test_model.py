import pytest
import torch

from jaffnet import JAFFNet
from jaffnet.layers import DenseReceptiveField, JointAttentionFusion

FAITHFUL_PARAMETERS = 41_938_313  # the authors' count for ResNet-18 at width 1.0


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def test_default_model_is_faithful_and_runs_at_64():
    model = JAFFNet().eval()
    assert count_parameters(model) == FAITHFUL_PARAMETERS
    assert model.config == {"encoder_depth": 18, "width": 1.0, "dilation_rates": [1, 2, 4]}
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 1, 64, 64)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("width", [0.125, 0.25])
@pytest.mark.parametrize("size", [(32, 32), (64, 96), (96, 64)])
def test_side_outputs_shapes(width, size):
    model = JAFFNet(width=width).train()
    outputs = model(torch.randn(2, 3, *size))
    assert isinstance(outputs, tuple) and len(outputs) == 5
    assert all(o.shape == (2, 1, *size) for o in outputs)
    model.eval()
    with torch.no_grad():
        prediction = model(torch.randn(2, 3, *size))
        explicit = model(torch.randn(2, 3, *size), side_outputs=True)
    assert prediction.shape == (2, 1, *size)
    assert len(explicit) == 5


def test_eval_prediction_equals_first_side_output():
    model = JAFFNet(width=0.125).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model(x, side_outputs=True)[0])


def test_resnet34_option_and_width_shrink_the_model():
    assert count_parameters(JAFFNet(encoder_depth=34, width=0.125)) > count_parameters(JAFFNet(width=0.125))
    assert count_parameters(JAFFNet(width=0.25)) < FAITHFUL_PARAMETERS / 10


def test_every_parameter_gets_a_gradient():
    from jaffnet.losses import HybridLoss

    model = JAFFNet(width=0.125).train()
    x = torch.randn(2, 3, 64, 64)
    target = (torch.rand(2, 1, 64, 64) > 0.8).float()
    HybridLoss()(model(x), target).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing
    # alpha starts at 0, so JAFF attention weights get zero gradients at first; alpha itself must move.
    assert all(stage.jaff.alpha.grad.abs().item() > 0 for stage in model.decoder.stages)


@pytest.mark.parametrize("size", [(33, 64), (64, 48), (100, 100)])
def test_non_multiple_of_32_raises(size):
    with pytest.raises(ValueError, match="multiples of 32"):
        JAFFNet(width=0.125)(torch.randn(1, 3, *size))


def test_the_model_takes_rgb_and_grayscale_frames_become_rgb_before_normalising():
    import numpy as np

    from jaffnet.frames import model_inputs

    model = JAFFNet(width=0.125).eval()
    for channels in (1, 4):
        with pytest.raises(ValueError, match="to_rgb"):
            model(torch.randn(1, channels, 32, 32))
    gray = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    batch = model_inputs([gray], "imagenet")
    assert batch.shape == (1, 3, 32, 32)
    assert np.array_equal(batch, model_inputs([np.repeat(gray[:, :, None], 3, axis=2)], "imagenet"))
    with torch.no_grad():
        assert model(torch.from_numpy(batch)).shape == (1, 1, 32, 32)


@pytest.mark.parametrize("rates", [(1, 2), (1, 2, 4), (1, 2, 4, 8), (3,)])
def test_drf_accepts_any_number_of_rates(rates):
    drf = DenseReceptiveField(16, rates)
    assert len(drf.units[0].branches) == len(rates)
    assert drf(torch.randn(2, 16, 4, 4)).shape == (2, 16, 4, 4)
    model = JAFFNet(width=0.125, dilation_rates=rates).train()
    assert model.config["dilation_rates"] == list(rates)
    assert model(torch.randn(2, 3, 32, 32))[0].shape == (2, 1, 32, 32)


@pytest.mark.parametrize("rates", [(), (0, 2), (1.5, 2), "124", None])
def test_bad_dilation_rates_are_rejected(rates):
    with pytest.raises(ValueError, match="dilation_rates"):
        JAFFNet(width=0.125, dilation_rates=rates)


def test_bad_constructor_arguments_are_rejected():
    with pytest.raises(ValueError, match="encoder_depth"):
        JAFFNet(encoder_depth=50)
    with pytest.raises(ValueError, match="width"):
        JAFFNet(width=0)
    with pytest.raises(TypeError, match="in_channels"):  # RGB only: grayscale is replicated in preprocessing
        JAFFNet(in_channels=1)


def test_jaff_is_identity_at_initialisation():
    jaff = JointAttentionFusion(32)
    x, y = torch.randn(2, 32, 8, 8), torch.randn(2, 32, 8, 8)
    assert torch.equal(jaff(x, y), y)
    with torch.no_grad():
        jaff.alpha.fill_(1.0)
    assert not torch.equal(jaff(x, y), y)
