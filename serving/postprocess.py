"""Frame-size maps for the JSON reply: the binary mask as a base64 PNG, and the probability
map itself as exact float32 (for clients that score it, such as ``jaffnet evaluate --endpoint``)."""

from __future__ import annotations

import base64
import zlib

import cv2
import numpy as np

from pipelines.codec import encode_png

PROBABILITY_ENCODING = "float32-le+zlib+base64"


def _png_base64_decode(text: str, what: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(base64.b64decode(text), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 2:
        raise ValueError(f"the {what} is not a base64 single-channel PNG")
    return image


def mask_to_png_base64(mask: np.ndarray) -> str:
    """HxW bool -> base64 of a single-channel 8-bit PNG (defect 255, background 0)."""
    return base64.b64encode(encode_png(mask.astype(bool))).decode("ascii")


def png_base64_to_mask(text: str) -> np.ndarray:
    """The inverse of ``mask_to_png_base64``, for clients."""
    return _png_base64_decode(text, "mask") > 127


def encode_probability(probability: np.ndarray) -> dict:
    """HxW probabilities -> ``{"encoding", "height", "width", "data"}``: the exact float32
    values (little-endian, zlib, base64). Exact, not quantised: adaptive thresholds (twice
    a frame's mean probability) of near-empty maps move with any rounding."""
    array = np.ascontiguousarray(probability, dtype="<f4")
    return {"encoding": PROBABILITY_ENCODING, "height": int(array.shape[0]), "width": int(array.shape[1]),
            "data": base64.b64encode(zlib.compress(array.tobytes(), 1)).decode("ascii")}


def decode_probability(encoded: dict) -> np.ndarray:
    """The inverse of ``encode_probability``: float32 HxW."""
    if encoded.get("encoding") != PROBABILITY_ENCODING:
        raise ValueError(f"unknown probability map encoding {encoded.get('encoding')!r}")
    height, width = int(encoded["height"]), int(encoded["width"])
    expected = 4 * height * width
    raw = zlib.decompressobj().decompress(base64.b64decode(encoded["data"]), expected + 1)  # bounded
    if len(raw) != expected:
        raise ValueError(f"the probability map holds {len(raw)} bytes, not {height}x{width} float32")
    return np.frombuffer(raw, dtype="<f4").reshape(height, width).astype(np.float32)
