import pytest
import torch

from jaffnet.losses import HybridLoss


def _target():
    target = torch.zeros(2, 1, 64, 64)
    target[:, :, 16:40, 20:44] = 1
    return target


def test_perfect_confident_prediction_has_near_zero_loss():
    target = _target()
    logits = (target * 2 - 1) * 30  # sigmoid saturates at 0/1
    assert HybridLoss()(logits, target).item() < 1e-3
    side_outputs = [logits] * 5
    assert HybridLoss()(side_outputs, target).item() < 5e-3


def test_wrong_prediction_costs_more_and_each_term_counts():
    target = _target()
    perfect = (target * 2 - 1) * 30
    wrong = -perfect
    loss = HybridLoss()
    assert loss(wrong, target) > loss(torch.zeros_like(target), target) > loss(perfect, target)
    terms = loss.terms(wrong, target)
    assert all(value.item() > 0.5 for value in terms.values())


def test_weights_are_respected():
    target = _target()
    logits = torch.randn_like(target)
    terms = HybridLoss().terms(logits, target)
    weighted = HybridLoss(w_bce=2.0, w_ssim=0.5, w_iou=0.0)(logits, target)
    expected = 2.0 * terms["bce"] + 0.5 * terms["ssim"]
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-5)
    five = HybridLoss(w_bce=2.0, w_ssim=0.5, w_iou=0.0)([logits] * 5, target)
    assert five.item() == pytest.approx(5 * expected.item(), rel=1e-5)


def test_defect_free_frame_predicted_clean_has_near_zero_loss():
    target = torch.zeros(1, 1, 64, 64)
    assert HybridLoss()(torch.full_like(target, -30.0), target).item() < 1e-3


def test_bad_arguments():
    with pytest.raises(ValueError, match="w_iou"):
        HybridLoss(w_iou=-1)
    with pytest.raises(ValueError, match="shape"):
        HybridLoss()(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 64, 64))


@pytest.mark.parametrize("shape", [(3, 1, 64, 64), (2, 1, 48, 80), (1, 1, 11, 11)])
def test_ssim_equals_pytorch_msssim(shape):
    from pytorch_msssim import ssim as reference

    from jaffnet.losses import ssim

    torch.manual_seed(0)
    x, y = torch.rand(shape, dtype=torch.float64), (torch.rand(shape, dtype=torch.float64) > 0.9).double()
    expected = reference(x, y, data_range=1.0, size_average=True, win_size=11, win_sigma=1.5)
    assert ssim(x, y).item() == pytest.approx(expected.item(), abs=1e-6)  # its window is float32
    assert ssim(y, y).item() == pytest.approx(1.0, abs=1e-12)


def test_ssim_rejects_maps_it_cannot_score():
    from jaffnet.losses import ssim

    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 1, 10, 32), torch.zeros(1, 1, 10, 32))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\) maps"):
        ssim(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))


def test_side_outputs_stacked_equal_the_sum_of_each():
    target = _target()
    torch.manual_seed(1)
    maps = [torch.randn_like(target) for _ in range(5)]
    loss = HybridLoss(bce_pos_weight=3.0)
    one_by_one = sum(loss(logits, target) for logits in maps)
    assert loss(maps, target).item() == pytest.approx(one_by_one.item(), rel=1e-5)
