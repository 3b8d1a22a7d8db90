"""Bytes from the line -> a decoded frame, with refusals as HTTP errors.

Decoding itself lives in :mod:`pipelines.codec`, shared with ingestion so the
service accepts exactly the images the training data could be made of. This module
keeps only the HTTP concerns: which content types name which format, and turning the
codec's :class:`DecodeError` into an :class:`InspectionError` (a 4xx JSON answer).
"""

from __future__ import annotations

from collections.abc import Callable

from pipelines.codec import SUPPORTED_FORMATS, DecodedImage, DecodeError, read_image
from serving.errors import InspectionError

__all__ = ["SUPPORTED_FORMATS", "DecodedImage", "decode_frame", "format_for_content_type"]

# Declared content types -> the format the body must then be.
IMAGE_CONTENT_TYPES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "image/pjpeg": "JPEG",
    "image/bmp": "BMP",
    "image/x-bmp": "BMP",
    "image/x-ms-bmp": "BMP",
    "image/tiff": "TIFF",
    "image/tiff-fx": "TIFF",
}
# Types that say "bytes, sniff them"; an absent content type counts as one.
GENERIC_CONTENT_TYPES = ("", "application/octet-stream")


def format_for_content_type(content_type: str) -> str | None:
    """The image format a declared content type demands; None for generic bytes.

    Raises 415 for anything else (e.g. ``text/plain``, ``image/gif``, or curl's default
    ``application/x-www-form-urlencoded``).
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type in GENERIC_CONTENT_TYPES:
        return None
    if media_type in IMAGE_CONTENT_TYPES:
        return IMAGE_CONTENT_TYPES[media_type]
    if media_type.startswith("image/"):
        raise InspectionError(415, "unsupported_format",
                              f"content type {media_type} is not supported; send {', '.join(SUPPORTED_FORMATS)}")
    raise InspectionError(
        415, "unsupported_content_type",
        f"content type {media_type!r} is not accepted; post the frame as multipart/form-data (field 'file') "
        "or as a raw body with an image/* or application/octet-stream content type",
    )


def decode_frame(data: bytes, declared_format: str | None = None, max_pixels: int = 1 << 24,
                 admit: Callable[[int, int], None] | None = None, bit_depth: int | None = None) -> DecodedImage:
    """Validate and decode one frame (``.rgb`` is what the model takes); ``admit(width,
    height)`` may refuse it from the header, before any pixel is decoded.

    Every refusal is an ``InspectionError`` carrying the codec's status and code.
    """
    try:
        return read_image(data, declared_format, max_pixels, admit, bit_depth)
    except DecodeError as exc:
        raise InspectionError(exc.status, exc.code, exc.message) from exc
