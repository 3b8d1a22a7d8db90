import numpy as np
import pytest
import torch
from torch import nn

from jaffnet import JAFFNet
from jaffnet.layers import JointAttentionFusion

TOLERANCE = 1e-3  # the bound on |p_fast - p_eager|


def perturbed_model(seed: int = 0) -> JAFFNet:
    """A tiny eval-mode model whose BatchNorm statistics and JAFF gates are far from their
    initial values, so folding and attention are really exercised."""
    generator = torch.Generator().manual_seed(seed)
    # Module-scoped fixtures are built before the per-test seed: without its own seed the model's
    # initial weights would depend on what ran before it in the process (on a GPU machine one such
    # model gave a near-flat map, std 0.010, and failed the tests' spread check).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = JAFFNet(width=0.125)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(1 + torch.randn(n, generator=generator) * 0.2)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.2)
            elif isinstance(module, JointAttentionFusion):
                module.alpha.fill_(0.5 + torch.rand(1, generator=generator).item())
        # Spread the prediction so probabilities cover [0, 1], not a flat 0.5.
        model.heads.convs[-1].weight.mul_(20)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> JAFFNet:
    return perturbed_model()


ONNX_IMAGE_SIZE = 64


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """``perturbed_model()`` exported to ONNX through the CLI, once for the test_onnx and test_int8 modules:
    the export of the full-size model takes 15-30 s here."""
    from cli.main import main
    from jaffnet.io import save_pretrained

    root = tmp_path_factory.mktemp("onnx")
    save_pretrained(perturbed_model(), root / "saved", metadata={"image_size": ONNX_IMAGE_SIZE, "threshold": 0.4})
    out = root / "jaffnet.onnx"
    assert main(["export", "--model", str(root / "saved"), "--format", "onnx", "--out", str(out)]) == 0
    return out


def random_batch(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, height, width), dtype=np.float32)
