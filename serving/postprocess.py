"""Frame-size maps <-> base64 PNG for the JSON reply: the binary mask, and the probability
map itself (16-bit, for clients that score it, such as ``jaffnet evaluate --endpoint``)."""

from __future__ import annotations

import base64

import cv2
import numpy as np

PROBABILITY_SCALE = 65535  # 16-bit PNG: quantisation error <= 7.7e-6


def _png_base64(image: np.ndarray) -> str:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - encoding a 2-D uint8/uint16 array does not fail
        raise RuntimeError("PNG encoding failed")
    return base64.b64encode(encoded.tobytes()).decode("ascii")


def _png_base64_decode(text: str, what: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(base64.b64decode(text), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 2:
        raise ValueError(f"the {what} is not a base64 single-channel PNG")
    return image


def mask_to_png_base64(mask: np.ndarray) -> str:
    """HxW bool -> base64 of a single-channel 8-bit PNG (defect 255, background 0)."""
    return _png_base64(mask.astype(np.uint8) * 255)


def png_base64_to_mask(text: str) -> np.ndarray:
    """The inverse of ``mask_to_png_base64``, for clients."""
    return _png_base64_decode(text, "mask") > 127


def probability_to_png_base64(probability: np.ndarray) -> str:
    """HxW probabilities in [0, 1] -> base64 of a 16-bit PNG (value = round(p * 65535))."""
    scaled = np.rint(np.clip(probability, 0.0, 1.0) * PROBABILITY_SCALE).astype(np.uint16)
    return _png_base64(scaled)


def png_base64_to_probability(text: str) -> np.ndarray:
    """The inverse of ``probability_to_png_base64``: float32 HxW in [0, 1]."""
    image = _png_base64_decode(text, "probability map")
    if image.dtype != np.uint16:
        raise ValueError("the probability map is not a 16-bit PNG")
    return image.astype(np.float32) / PROBABILITY_SCALE
