"""The HTTP side of decoding: content types, and codec refusals as InspectionErrors.

Formats, channels, header readers, bombs and truncation are the codec's and are tested
in tests/pipelines/test_codec.py.
"""

import struct
import zlib

import numpy as np
import pytest

from jaffnet.preprocess import to_rgb
from pipelines.codec import DecodeError, decode_image, read_image
from serving.decoding import decode_frame, format_for_content_type
from serving.errors import InspectionError
from tests.serving.images import encode, grey_alpha_png, textured


@pytest.mark.parametrize("channels", [None, 3])
def test_frames_come_back_as_rgb(channels):
    image = textured(9, 11, channels)
    frame = decode_frame(encode(image, "PNG"), "PNG")
    assert frame.rgb.shape == (9, 11, 3) and frame.rgb.dtype == np.uint8
    assert np.array_equal(frame.rgb, to_rgb(image))
    assert (frame.height, frame.width, frame.format) == (9, 11, "PNG")
    assert (frame.channels, frame.bit_depth) == (channels or 1, 8)


def test_grey_alpha_png_decodes_the_same_for_ingestion_and_serving():
    grey = textured(7, 10, None)
    data = grey_alpha_png(grey, np.full_like(grey, 128))
    frame = decode_frame(data)
    assert frame.channels == 2 and frame.bit_depth == 8
    assert np.array_equal(decode_image(data), grey) and np.array_equal(frame.pixels, grey)
    assert np.array_equal(frame.rgb, to_rgb(grey))


def _forged_png(width: int, height: int) -> bytes:
    """A small PNG whose header claims another size: refused before it is decoded."""
    data = bytearray(encode(textured(8, 8), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(data[12:29]))  # a forger keeps the IHDR checksum right
    return bytes(data)


@pytest.mark.parametrize(
    "data, declared, max_pixels, status, code",
    [
        (b"", None, 1 << 24, 400, "empty_body"),
        (b"hello, this is text", None, 1 << 24, 400, "not_an_image"),
        (b"GIF89a" + bytes(64), None, 1 << 24, 415, "unsupported_format"),
        (encode(textured(8, 8)), "JPEG", 1 << 24, 415, "content_type_mismatch"),
        (encode(textured(8, 8))[:20], None, 1 << 24, 400, "truncated_image"),
        (_forged_png(3000, 3000), None, 1_000_000, 413, "too_many_pixels"),
    ],
)
def test_codec_refusals_become_inspection_errors_unchanged(data, declared, max_pixels, status, code):
    with pytest.raises(DecodeError) as codec:
        read_image(data, declared, max_pixels)
    with pytest.raises(InspectionError) as served:
        decode_frame(data, declared, max_pixels)
    assert (served.value.status, served.value.code, served.value.message) == (status, code, codec.value.message)


def test_frames_are_capped_by_default():
    with pytest.raises(InspectionError) as info:
        decode_frame(_forged_png(5000, 5000))  # 25 Mpx, above the default 2^24
    assert (info.value.status, info.value.code) == (413, "too_many_pixels")


def test_opencv_failures_are_4xx_not_500():
    data = bytearray(encode(np.zeros((1, 8), np.uint8), "BMP"))
    data[18:22] = struct.pack("<i", 2_000_000)  # 2,000,000 x 1: under the cap, beyond OpenCV
    with pytest.raises(InspectionError) as info:
        decode_frame(bytes(data), "BMP")
    assert (info.value.status, info.value.code) == (400, "corrupt_image")


@pytest.mark.parametrize(
    "content_type, expected",
    [("image/png", "PNG"), ("IMAGE/JPEG; q=1", "JPEG"), ("image/x-ms-bmp", "BMP"), ("image/tiff", "TIFF"),
     ("application/octet-stream", None), ("", None)],
)
def test_content_types(content_type, expected):
    assert format_for_content_type(content_type) == expected


@pytest.mark.parametrize("content_type, code", [
    ("text/plain", "unsupported_content_type"),
    ("application/json", "unsupported_content_type"),
    ("application/x-www-form-urlencoded", "unsupported_content_type"),
    ("image/gif", "unsupported_format"),
])
def test_wrong_content_types_are_415(content_type, code):
    with pytest.raises(InspectionError) as info:
        format_for_content_type(content_type)
    assert (info.value.status, info.value.code) == (415, code)
