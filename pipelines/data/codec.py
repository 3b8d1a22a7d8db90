"""Decoding, validating and re-encoding image/mask pairs.

Images keep their channel count (grayscale stays single-channel, colour becomes RGB) and
are stored as lossless PNG, so one decoder serves every source format. Masks become
0/255 single-channel PNG. Every problem raises :class:`InvalidSample` with a reason that
ends up in the manifest next to the file name.
"""

from __future__ import annotations

import cv2
import numpy as np

# A mask counts as binary when almost every pixel sits near black or white after
# thresholding at 128 (JPEG-compressed masks blur their edges a little).
_AMBIGUOUS_LOW, _AMBIGUOUS_HIGH = 32, 223
MAX_AMBIGUOUS_FRACTION = 0.02


class InvalidSample(ValueError):
    """A file that cannot become a training sample; the message is the reason and
    ``part`` says which file of the pair is at fault ("image" or "mask")."""

    def __init__(self, reason: str, part: str = "image"):
        super().__init__(reason)
        self.part = part


def _imdecode(data: bytes, flags: int, what: str) -> np.ndarray:
    if not data:
        raise InvalidSample(f"{what} file is empty", what)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None or image.size == 0:
        raise InvalidSample(f"{what} is not a decodable image (corrupt, truncated or unknown format)",
                            what)
    return image


def _to_uint8(image: np.ndarray, what: str) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    raise InvalidSample(f"{what} has unsupported pixel type {image.dtype}", what)


def decode_image(data: bytes) -> np.ndarray:
    """Encoded bytes -> uint8 ``(H, W)`` grayscale or ``(H, W, 3)`` RGB."""
    image = _to_uint8(_imdecode(data, cv2.IMREAD_UNCHANGED, "image"), "image")
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 1:
            image = image[:, :, 0]
        elif channels == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif channels == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        else:
            raise InvalidSample(f"image has {channels} channels; expected 1, 3 or 4", "image")
    return np.ascontiguousarray(image)


def decode_mask(data: bytes) -> np.ndarray:
    """Encoded bytes -> uint8 ``(H, W)`` in {0, 255}; rejects masks that are not binary."""
    mask = _to_uint8(_imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_GRAYSCALE, "mask"), "mask")
    values = np.unique(mask)
    if len(values) <= 2 and values[0] == 0:
        # {0}, {0, 1}, {0, 255}, ...: label masks with any single foreground value
        return np.where(mask > 0, np.uint8(255), np.uint8(0))
    ambiguous = float(np.mean((mask > _AMBIGUOUS_LOW) & (mask < _AMBIGUOUS_HIGH)))
    if ambiguous > MAX_AMBIGUOUS_FRACTION:
        raise InvalidSample(
            f"mask is not binary: {ambiguous:.1%} of its pixels are grey "
            f"({_AMBIGUOUS_LOW} < value < {_AMBIGUOUS_HIGH})", "mask"
        )
    return np.where(mask >= 128, np.uint8(255), np.uint8(0))


def encode_png(image: np.ndarray) -> bytes:
    """uint8 grayscale or RGB -> PNG bytes."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise InvalidSample("could not encode as PNG")
    return buffer.tobytes()


def validate_pair(image_bytes: bytes, mask_bytes: bytes | None) -> tuple[np.ndarray, np.ndarray]:
    """Decode both and check they agree; a missing mask means a defect-free frame."""
    image = decode_image(image_bytes)
    if mask_bytes is None:
        return image, np.zeros(image.shape[:2], np.uint8)
    mask = decode_mask(mask_bytes)
    if mask.shape != image.shape[:2]:
        raise InvalidSample(
            f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size "
            f"{image.shape[1]}x{image.shape[0]}", "mask"
        )
    return image, mask
