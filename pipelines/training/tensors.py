"""Tensor conversions of the training loop: Ray Data / numpy batches in, probabilities out."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def batch_tensor(array: Any, device: torch.device | str = "cpu") -> Tensor:
    """A float32 tensor from a (possibly read-only) Ray Data numpy column."""
    return torch.from_numpy(np.array(array, dtype=np.float32, copy=True)).to(device, non_blocking=True)


def probability_maps(prediction_logits: Tensor) -> np.ndarray:
    """Prediction logits ``(N, 1, S, S)`` -> float32 probabilities ``(N, S, S)``."""
    return torch.sigmoid(prediction_logits.detach().float())[:, 0].cpu().numpy()
