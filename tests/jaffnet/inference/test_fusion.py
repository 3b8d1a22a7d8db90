import torch

from jaffnet.inference import fold_batchnorm


def count_batchnorm(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_fold_removes_every_batchnorm_and_keeps_the_logits(model):
    folded = fold_batchnorm(model)
    assert count_batchnorm(model) > 50 and count_batchnorm(folded) == 0
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4)


def test_fold_leaves_the_input_model_untouched(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    fold_batchnorm(model)
    model.eval()
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
