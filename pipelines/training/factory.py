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
    return HybridLoss(w_bce=cfg.w_bce, w_ssim=cfg.w_ssim, w_iou=cfg.w_iou)


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_weight_average(cfg: TrainConfig, model: nn.Module) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights and buffers (BatchNorm
    statistics too: small per-worker batches make them noisy), or None without ``ema_decay``."""
    if cfg.ema_decay is None:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch."""
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=_constant)


def _constant(epoch: int) -> float:  # module-level: LambdaLR state must stay picklable
    return 1.0
