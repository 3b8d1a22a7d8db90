"""The inference head every fast path shares: logits -> per-pixel probabilities."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ProbabilityMap(nn.Module):
    """Wraps an eval-mode JAFFNet: ``(N, C, H, W)`` image -> ``(N, H, W)`` defect probability.

    The sigmoid runs in float32 whatever the model's dtype, so half-precision paths lose
    precision only inside the network. It is also the graph ``export_onnx`` writes, so
    an ONNX file answers with probabilities, exactly like a ``Predictor``.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        logits = self.model(image, side_outputs=False)
        return torch.sigmoid(logits.float()).squeeze(1)
