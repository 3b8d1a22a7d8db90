"""Model, loss, optimiser and LR schedule built from a ``TrainConfig``."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from jaffnet.io import load_encoder_weights
from jaffnet.losses import HybridLoss
from jaffnet.model import JAFFNet
from pipelines.training.config import TrainConfig

# The layout models and batches train in: oneDNN's convolutions (and cuDNN's under autocast) run faster
# channels-last; the demo's training step took 0.9x the time on 2 CPU cores (docs/benchmarks/demo.md).
# Weights are still saved contiguous (jaffnet.io), so inference is unchanged.
TRAINING_MEMORY_FORMAT = torch.channels_last


def build_model(cfg: TrainConfig) -> JAFFNet:
    model = JAFFNet(**cfg.model_arguments())
    if cfg.encoder_weights:
        load_encoder_weights(model, cfg.encoder_weights)
    if cfg.head_prior is not None:
        # Defects cover a few % of the pixels: starting every head at that prior instead of 0.5
        # spares the first epochs from unlearning a half-grey map (the background's MAE).
        with torch.no_grad():
            for conv in model.heads.convs:
                conv.bias.fill_(math.log(cfg.head_prior / (1 - cfg.head_prior)))
    return model


def build_loss(cfg: TrainConfig) -> HybridLoss:
    return HybridLoss(w_bce=cfg.w_bce, w_ssim=cfg.w_ssim, w_iou=cfg.w_iou, bce_pos_weight=cfg.bce_pos_weight)


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimiser over ``model``'s parameters (already on their device). Fused kernels (one pass
    over all parameters) where torch has them for that device: the demo's training step took 0.89x
    the time of the default multi-tensor Adam on 2 CPU cores (docs/benchmarks/demo.md)."""
    params, lr = list(model.parameters()), cfg.effective_lr
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params) or None
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused)


def build_weight_average(cfg: TrainConfig, model: nn.Module) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights and buffers (BatchNorm
    statistics too: small per-worker batches make them noisy), or None without ``ema_decay``."""
    if cfg.ema_decay is None:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch; ``warmup_epochs`` ramp the rate linearly up to ``lr`` first
    (from a tenth of it) and the schedule runs over the epochs after them."""
    lr_scheduler = torch.optim.lr_scheduler
    warmup, after = cfg.warmup_epochs, cfg.epochs - cfg.warmup_epochs
    if cfg.scheduler == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, after))
    elif cfg.scheduler == "step":
        main = lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    else:
        main = lr_scheduler.LambdaLR(optimizer, lr_lambda=_constant)
    if not warmup:
        return main
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=0.1, end_factor=1.0, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def _constant(epoch: int) -> float:  # module-level: LambdaLR state must stay picklable
    return 1.0
