"""Model input/output conversions shared by the training loop's validation and ``evaluate``.

Both turn Ray Data batches (``image`` float32 ``(N, 3, S, S)`` normalised, ``id``) into
per-image probability maps at the training size through these functions, so evaluation
reproduces the validation metrics logged during training.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


def batch_tensor(array: Any, device: torch.device | str = "cpu") -> Tensor:
    """A float32 tensor from a (possibly read-only) Ray Data numpy column."""
    return torch.from_numpy(np.array(array, dtype=np.float32, copy=True)).to(device, non_blocking=True)


def probability_maps(prediction_logits: Tensor) -> np.ndarray:
    """Prediction logits ``(N, 1, S, S)`` -> float32 probabilities ``(N, S, S)``."""
    return torch.sigmoid(prediction_logits.detach().float())[:, 0].cpu().numpy()


def batch_ids(batch: Mapping[str, Any]) -> list[str]:
    return [str(i) for i in batch["id"]]


@torch.inference_mode()
def predict_probabilities(model: nn.Module, batches: Iterable[Mapping[str, Any]],
                          device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """``id -> (S, S)`` probabilities for every row of ``batches``; the model runs in eval mode."""
    model.eval()
    probabilities: dict[str, np.ndarray] = {}
    for batch in batches:
        maps = probability_maps(model(batch_tensor(batch["image"], device), side_outputs=False))
        probabilities.update(zip(batch_ids(batch), maps))
    return probabilities
