"""Test frames: encoded the way a line PC would send them."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tiff"}


def encode(image: np.ndarray, image_format: str = "PNG") -> bytes:
    """Encode an RGB (HxWx3), RGBA (HxWx4) or grayscale (HxW) array; OpenCV wants BGR(A)."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    ok, buffer = cv2.imencode(EXTENSIONS[image_format], image)
    assert ok
    return buffer.tobytes()


def textured(height: int, width: int, channels: int | None = 3, seed: int = 0) -> np.ndarray:
    """A dark, noisy surface (no pixel above 120)."""
    shape = (height, width) if channels is None else (height, width, channels)
    return np.random.default_rng(seed).integers(40, 120, shape, dtype=np.uint8)


def grey_alpha_png(grey: np.ndarray, alpha: np.ndarray) -> bytes:
    """A grayscale + alpha PNG (colour type 4), which OpenCV cannot encode: Pillow writes it."""
    written = io.BytesIO()
    Image.fromarray(np.dstack([grey, alpha]).astype(np.uint8)).save(written, "PNG")  # (H, W, 2) uint8 is "LA"
    return written.getvalue()
