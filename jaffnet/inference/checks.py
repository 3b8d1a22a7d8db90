"""Input validation shared by every backend: a clear ValueError instead of a deep crash."""

from __future__ import annotations

import numpy as np

from jaffnet.model import INPUT_MULTIPLE


def check_batch(batch: np.ndarray, channels: int) -> np.ndarray:
    """Return ``batch`` as a C-contiguous float32 ``(N, channels, H, W)`` array, or raise."""
    if not isinstance(batch, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(batch).__name__}")
    if batch.ndim != 4 or batch.shape[0] == 0 or batch.shape[1] != channels:
        raise ValueError(f"expected a float32 (N, {channels}, H, W) batch with N >= 1, got shape {batch.shape}")
    if not np.issubdtype(batch.dtype, np.floating):
        raise ValueError(
            f"expected normalised floats (jaffnet.preprocess.normalize), got dtype {batch.dtype}"
        )
    height, width = batch.shape[-2:]
    if height % INPUT_MULTIPLE or width % INPUT_MULTIPLE or height == 0 or width == 0:
        raise ValueError(
            f"height and width must be positive multiples of {INPUT_MULTIPLE}, got {height}x{width}; "
            "resize or pad the image first"
        )
    return np.ascontiguousarray(batch, dtype=np.float32)
