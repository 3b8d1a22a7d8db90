"""The one image -> model-input conversion shared by training, evaluation and serving.

Images are RGB (convert OpenCV's BGR before calling) or single-channel grayscale, uint8.
Grayscale is replicated to three channels so one model serves both kinds of line camera.
"""

from __future__ import annotations

import numpy as np

from jaffnet.contract import check_normalization

# ImageNet statistics: what a torchvision-pretrained encoder expects.
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# The authors' data_loader (ToTensorLab flag 0): image / max(image), then one mean/std for
# every channel. Weights trained with their code expect exactly this.
AUTHORS_MEAN = np.float32(0.4669)
AUTHORS_STD = np.float32(0.2437)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """HxW, HxWx1 or HxWx3 uint8 -> HxWx3 uint8."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected an HxW, HxWx1 or HxWx3 image, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def normalize(images: np.ndarray, normalization: str) -> np.ndarray:
    """uint8 RGB ``(..., H, W, 3)`` -> float32 ``(..., 3, H, W)`` normalised as an input
    contract's ``normalization`` says: ``imagenet`` (image/255, ImageNet mean/std per channel)
    or ``authors`` (each image divided by its own maximum over H, W and C, then
    (x - 0.4669) / 0.2437)."""
    check_normalization(normalization)
    if normalization == "imagenet":
        scaled = (images.astype(np.float32) / 255.0 - MEAN) / STD
    else:
        pixels = images.astype(np.float32)
        peak = pixels.max(axis=(-3, -2, -1), keepdims=True)
        # The authors divide by 0 on an all-black frame (NaN); it stays black here.
        scaled = (pixels / np.where(peak > 0, peak, np.float32(1)) - AUTHORS_MEAN) / AUTHORS_STD
    return np.ascontiguousarray(np.moveaxis(scaled, -1, -3))
