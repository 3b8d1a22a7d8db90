"""Hybrid BCE + SSIM + IoU loss with deep supervision (all side outputs)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pytorch_msssim import ssim
from torch import Tensor, nn
from torch.nn import functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
# Added to intersection and union: keeps the IoU term defined (and ~0 when correct) on
# defect-free frames, whose masks are empty.
IOU_SMOOTH = 1.0


def soft_iou_loss(probs: Tensor, target: Tensor) -> Tensor:
    dims = (1, 2, 3)
    intersection = (probs * target).sum(dims)
    union = (probs + target - probs * target).sum(dims)
    return (1.0 - (intersection + IOU_SMOOTH) / (union + IOU_SMOOTH)).mean()


def ssim_loss(probs: Tensor, target: Tensor) -> Tensor:
    return 1.0 - ssim(probs, target, data_range=1.0, size_average=True, win_size=SSIM_WINDOW, win_sigma=SSIM_SIGMA)


class HybridLoss(nn.Module):
    """``w_bce*BCE + w_ssim*(1-SSIM) + w_iou*(1-IoU)`` summed over every side output.

    Takes logits (one map or a sequence of side outputs) and a {0,1} target of shape
    ``(N, 1, H, W)``. ``bce_pos_weight`` > 1 weighs defect pixels more in the BCE term
    (defects cover a few % of the pixels; 1: the authors' plain BCE).
    """

    def __init__(self, w_bce: float = 1.0, w_ssim: float = 1.0, w_iou: float = 1.0, bce_pos_weight: float = 1.0):
        super().__init__()
        for name, value in (("w_bce", w_bce), ("w_ssim", w_ssim), ("w_iou", w_iou)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if not isinstance(bce_pos_weight, (int, float)) or bce_pos_weight <= 0:
            raise ValueError(f"bce_pos_weight must be a positive number, got {bce_pos_weight!r}")
        self.w_bce, self.w_ssim, self.w_iou = float(w_bce), float(w_ssim), float(w_iou)
        self.bce_pos_weight = float(bce_pos_weight)

    def terms(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """The three unweighted terms for one map."""
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
        # SSIM and the sigmoid are unstable in half precision: compute in float32.
        logits, target = logits.float(), target.float()
        probs = torch.sigmoid(logits)
        return {
            "bce": F.binary_cross_entropy_with_logits(
                logits, target, pos_weight=None if self.bce_pos_weight == 1.0 else logits.new_tensor(self.bce_pos_weight)),
            "ssim": ssim_loss(probs, target),
            "iou": soft_iou_loss(probs, target),
        }

    def forward(self, outputs: Tensor | Sequence[Tensor], target: Tensor) -> Tensor:
        maps = [outputs] if isinstance(outputs, Tensor) else list(outputs)
        total = target.new_zeros((), dtype=torch.float32)
        for logits in maps:
            terms = self.terms(logits, target)
            total = total + self.w_bce * terms["bce"] + self.w_ssim * terms["ssim"] + self.w_iou * terms["iou"]
        return total
