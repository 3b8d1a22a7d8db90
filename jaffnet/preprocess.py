"""The one image -> model-input conversion shared by training, evaluation and serving.

Images are RGB (convert OpenCV's BGR before calling) or single-channel grayscale, uint8.
Grayscale is replicated to three channels so one model serves both kinds of line camera.
"""

from __future__ import annotations

import numpy as np

# ImageNet statistics: what a torchvision-pretrained encoder expects.
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """HxW, HxWx1 or HxWx3 uint8 -> HxWx3 uint8."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected an HxW, HxWx1 or HxWx3 image, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(..., H, W, 3)`` -> float32 ImageNet-normalised ``(..., 3, H, W)``."""
    scaled = (images.astype(np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(np.moveaxis(scaled, -1, -3))
