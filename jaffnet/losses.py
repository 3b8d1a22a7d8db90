"""Hybrid BCE + SSIM + IoU loss with deep supervision (all side outputs)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
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


# SSIM's constants for a data range of 1 (Wang et al. 2004), as pytorch_msssim and the authors use.
_SSIM_C1, _SSIM_C2 = 0.01 ** 2, 0.03 ** 2


def _gaussian_band(size: int, like: Tensor) -> Tensor:
    """``(size, size - SSIM_WINDOW + 1)``: column j holds the normalised Gaussian window at rows
    j..j+10, so ``x @ band`` is the window's valid 1-D filter along x's last axis."""
    offsets = torch.arange(SSIM_WINDOW, dtype=torch.float64) - SSIM_WINDOW // 2
    window = torch.exp(-offsets ** 2 / (2 * SSIM_SIGMA ** 2))
    window = window / window.sum()
    tap = torch.arange(size)[:, None] - torch.arange(size - SSIM_WINDOW + 1)[None, :]  # row - column
    inside = (tap >= 0) & (tap < SSIM_WINDOW)
    band = torch.where(inside, window[tap.clamp(0, SSIM_WINDOW - 1)], torch.zeros((), dtype=torch.float64))
    return band.to(device=like.device, dtype=like.dtype)


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Mean SSIM of two ``(N, 1, H, W)`` maps in [0, 1] with an 11-px Gaussian window (sigma 1.5,
    valid positions only): the same value as ``pytorch_msssim.ssim(x, y, data_range=1)``.

    The separable Gaussian runs as two matrix products with banded matrices instead of
    depthwise convolutions: on CPU oneDNN's backward pass of those took 8x longer (a third
    of a whole training step of the 64-px demo model)."""
    if x.dim() != 4 or x.shape[1] != 1 or x.shape != y.shape:
        raise ValueError(f"SSIM takes two (N, 1, H, W) maps, got {tuple(x.shape)} and {tuple(y.shape)}")
    height, width = x.shape[-2:]
    if min(height, width) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs maps of at least {SSIM_WINDOW}x{SSIM_WINDOW} px, got {height}x{width}")
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (N, 5, H, W)
    blurred = _gaussian_band(height, x).transpose(0, 1) @ (stats @ _gaussian_band(width, x))
    mu_x, mu_y, xx, yy, xy = blurred.unbind(dim=1)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    contrast_structure = (2 * (xy - mu_xy) + _SSIM_C2) / ((xx - mu_xx) + (yy - mu_yy) + _SSIM_C2)
    luminance = (2 * mu_xy + _SSIM_C1) / (mu_xx + mu_yy + _SSIM_C1)
    return (luminance * contrast_structure).mean()


def ssim_loss(probs: Tensor, target: Tensor) -> Tensor:
    return 1.0 - ssim(probs, target)


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
        for logits in maps:
            if logits.shape != target.shape:
                raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
        # Every term is a mean over equal-sized maps, so the sum over the side outputs is the
        # number of maps times the terms of them stacked into one batch: one pass, not five.
        terms = self.terms(torch.cat(maps), target.repeat(len(maps), 1, 1, 1))
        return len(maps) * (self.w_bce * terms["bce"] + self.w_ssim * terms["ssim"] + self.w_iou * terms["iou"])
