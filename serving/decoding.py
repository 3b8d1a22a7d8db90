"""Bytes from the line -> an RGB uint8 frame, refusing bad input before it costs memory.

The format is sniffed from the magic bytes, and the pixel dimensions are read from the
header *before* decoding, so a small file that would decode to gigabytes (a
decompression bomb) is refused with 413 without being decoded. OpenCV then decodes with
``IMREAD_UNCHANGED`` (keeping 16-bit and alpha visible) and the result is converted to
the one layout the model takes: HxWx3 uint8 **RGB** (OpenCV's BGR is swapped here;
grayscale is replicated by ``jaffnet.preprocess.to_rgb``). 16-bit frames keep their
high byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np

from jaffnet.preprocess import to_rgb
from serving.errors import InspectionError

SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")

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

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    # Recognised only to name them in the refusal.
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
)


@dataclass(frozen=True)
class DecodedFrame:
    rgb: np.ndarray  # HxWx3 uint8, RGB
    format: str
    channels: int  # as stored: 1 grayscale, 3 colour, 4 colour + alpha
    bit_depth: int  # as stored: 8 or 16

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]


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


def sniff_format(data: bytes) -> str | None:
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def read_dimensions(data: bytes, image_format: str) -> tuple[int, int]:
    """(width, height) from the header alone. Raises 400 if the header is cut short."""
    try:
        width, height = _HEADER_READERS[image_format](data)
    except (struct.error, IndexError) as exc:
        raise InspectionError(400, "truncated_image", f"the {image_format} header is truncated") from exc
    if width <= 0 or height <= 0:
        raise InspectionError(400, "corrupt_image", f"the {image_format} header gives a {width}x{height} image")
    return width, height


def _png_dimensions(data: bytes) -> tuple[int, int]:
    if data[12:16] != b"IHDR":
        raise InspectionError(400, "corrupt_image", "the PNG does not start with an IHDR chunk")
    return struct.unpack(">II", data[16:24])


# JPEG start-of-frame markers (C4, C8 and CC are DHT, JPG and DAC, not frames).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}


def _jpeg_dimensions(data: bytes) -> tuple[int, int]:
    position = 2  # after SOI
    while True:
        if data[position] != 0xFF:
            raise InspectionError(400, "corrupt_image", "the JPEG segment structure is corrupt")
        while data[position] == 0xFF:  # fill bytes
            position += 1
        marker = data[position]
        position += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            raise InspectionError(400, "corrupt_image", "the JPEG has no frame header")
        (length,) = struct.unpack(">H", data[position:position + 2])
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[position + 3:position + 7])
            return width, height
        position += length


def _bmp_dimensions(data: bytes) -> tuple[int, int]:
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return width, abs(height)  # negative height = rows stored top-down


_TIFF_WIDTH, _TIFF_LENGTH = 256, 257
_TIFF_SHORT, _TIFF_LONG = 3, 4


def _tiff_dimensions(data: bytes) -> tuple[int, int]:
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd:ifd + 2])
    found = {}
    for entry in range(count):
        offset = ifd + 2 + 12 * entry
        tag, kind = struct.unpack(order + "HH", data[offset:offset + 4])
        if tag in (_TIFF_WIDTH, _TIFF_LENGTH):
            value = data[offset + 8:offset + 12]
            if kind == _TIFF_SHORT:
                found[tag] = struct.unpack(order + "H", value[:2])[0]
            elif kind == _TIFF_LONG:
                found[tag] = struct.unpack(order + "I", value)[0]
    if len(found) < 2:
        raise InspectionError(400, "corrupt_image", "the TIFF has no image width/length tags")
    return found[_TIFF_WIDTH], found[_TIFF_LENGTH]


_HEADER_READERS = {"PNG": _png_dimensions, "JPEG": _jpeg_dimensions, "BMP": _bmp_dimensions, "TIFF": _tiff_dimensions}


def decode_frame(data: bytes, declared_format: str | None = None, max_pixels: int = 1 << 24) -> DecodedFrame:
    """Validate and decode one frame. Every refusal is an ``InspectionError`` (4xx)."""
    if not data:
        raise InspectionError(400, "empty_body", "the request carries no image bytes")
    image_format = sniff_format(data)
    if image_format is None:
        raise InspectionError(400, "not_an_image",
                              f"the body is not a {' / '.join(SUPPORTED_FORMATS)} image (unrecognised leading bytes)")
    if image_format not in SUPPORTED_FORMATS:
        raise InspectionError(415, "unsupported_format",
                              f"{image_format} images are not supported; send {', '.join(SUPPORTED_FORMATS)}")
    if declared_format is not None and declared_format != image_format:
        raise InspectionError(415, "content_type_mismatch",
                              f"the content type says {declared_format} but the body is a {image_format}")
    width, height = read_dimensions(data, image_format)
    if width * height > max_pixels:
        raise InspectionError(
            413, "too_many_pixels",
            f"the frame is {width}x{height} = {width * height} pixels, above the limit of {max_pixels}")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise InspectionError(400, "corrupt_image", f"the {image_format} data cannot be decoded (truncated or corrupt)")
    if image.shape[:2] != (height, width):  # a header that lied about the size
        raise InspectionError(400, "corrupt_image",
                              f"the {image_format} header says {width}x{height} but decodes to "
                              f"{image.shape[1]}x{image.shape[0]}")
    channels = 1 if image.ndim == 2 else image.shape[2]
    bit_depth = _bit_depth(image, image_format)
    return DecodedFrame(_to_rgb8(image), image_format, channels, bit_depth)


def _bit_depth(image: np.ndarray, image_format: str) -> int:
    if image.dtype == np.uint8:
        return 8
    if image.dtype == np.uint16:
        return 16
    raise InspectionError(415, "unsupported_sample_type",
                          f"{image_format} samples of type {image.dtype} are not supported; send 8- or 16-bit integers")


def _to_rgb8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    elif image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 2:  # grayscale + alpha
        image = image[:, :, 0]
    return to_rgb(image)
