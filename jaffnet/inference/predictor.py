"""``Predictor``: the one call signature every inference backend offers.

A predictor maps a normalised (``jaffnet.preprocess``) float32 ``(N, C, H, W)`` numpy batch
to float32 ``(N, H, W)`` probabilities. Each runtime has its own module (``torch_backend``,
``onnxruntime_backend``, ``openvino_backend``, ``int8_backend``); ``backends`` is the table
of them and ``build_predictor``. This module imports none of them, so they can all import it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from jaffnet.inference.checks import check_batch


class Predictor(ABC):
    """``predictor(batch)``: float32 ``(N, C, H, W)`` -> float32 ``(N, H, W)`` in [0, 1]."""

    def __init__(self, backend: str, device: str, in_channels: int):
        self.backend = backend
        self.device = device
        self.in_channels = in_channels

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._predict(check_batch(batch, self.in_channels))

    @abstractmethod
    def _predict(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` is already validated and float32."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend!r}, device={self.device!r})"


def check_threads(threads: int | None) -> None:
    """The ``threads`` option every CPU backend takes: None or a positive int."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int, got {threads!r}")
