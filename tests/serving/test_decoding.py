import struct

import numpy as np
import pytest

from serving.decoding import decode_frame, format_for_content_type, read_dimensions, sniff_format
from serving.errors import InspectionError
from tests.serving.images import encode, textured


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "BMP", "TIFF"])
@pytest.mark.parametrize("channels", [None, 3])
def test_formats_decode_to_rgb_with_header_dimensions(image_format, channels):
    image = textured(37, 53, channels)
    if channels:
        image = image + np.array([0, 40, 80], dtype=np.uint8)  # distinct channel means expose a BGR swap
    data = encode(image, image_format)
    assert sniff_format(data) == image_format
    assert read_dimensions(data, image_format) == (53, 37)
    frame = decode_frame(data, declared_format=image_format)
    assert frame.rgb.shape == (37, 53, 3) and frame.rgb.dtype == np.uint8
    assert (frame.format, frame.channels, frame.bit_depth) == (image_format, channels or 1, 8)
    expected = image if channels else np.repeat(image[:, :, None], 3, axis=2)
    if image_format == "JPEG":  # lossy: compare channel means
        assert np.allclose(frame.rgb.mean(axis=(0, 1)), expected.mean(axis=(0, 1)), atol=4)
    else:
        assert np.array_equal(frame.rgb, expected)


@pytest.mark.parametrize("image_format", ["PNG", "BMP", "TIFF"])
def test_channel_order_is_rgb(image_format):
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[..., 0] = 255  # pure red in RGB
    rgb = decode_frame(encode(image, image_format)).rgb
    assert rgb[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize("image_format", ["PNG", "TIFF"])
def test_sixteen_bit_keeps_the_high_byte(image_format):
    image = np.full((16, 24), 0xABCD, dtype=np.uint16)
    frame = decode_frame(encode(image, image_format))
    assert frame.bit_depth == 16 and frame.channels == 1
    assert (frame.rgb == 0xAB).all()


def test_alpha_is_dropped():
    image = np.zeros((8, 8, 4), dtype=np.uint8)
    image[..., 2] = 200  # blue
    image[..., 3] = 10  # almost transparent: ignored, the camera's pixels count
    frame = decode_frame(encode(image, "PNG"))
    assert frame.channels == 4 and frame.rgb[0, 0].tolist() == [0, 0, 200]


def test_big_endian_tiff_header():
    header = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 2)
    header += struct.pack(">HHI", 256, 4, 1) + struct.pack(">I", 70000)  # width, LONG
    header += struct.pack(">HHI", 257, 3, 1) + struct.pack(">HH", 300, 0)  # length, SHORT
    assert read_dimensions(header, "TIFF") == (70000, 300)


def _refusal(data, declared=None, **kwargs) -> InspectionError:
    with pytest.raises(InspectionError) as info:
        decode_frame(data, declared, **kwargs)
    return info.value


@pytest.mark.parametrize(
    "data, declared, status, code",
    [
        (b"", None, 400, "empty_body"),
        (b"hello, this is text", None, 400, "not_an_image"),
        (b"GIF89a" + bytes(64), None, 415, "unsupported_format"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(32), None, 415, "unsupported_format"),
        (encode(textured(8, 8)), "JPEG", 415, "content_type_mismatch"),
        (encode(textured(8, 8))[:20], None, 400, "truncated_image"),
    ],
)
def test_bad_bytes_are_refused_with_a_reason(data, declared, status, code):
    error = _refusal(data, declared)
    assert (error.status, error.code) == (status, code)
    assert error.message


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "BMP", "TIFF"])
def test_truncated_images_are_refused(image_format):
    data = encode(textured(64, 64), image_format)
    error = _refusal(data[: len(data) // 2])
    assert error.status == 400 and error.code in ("truncated_image", "corrupt_image")


def test_decompression_bomb_is_refused_before_decoding():
    data = encode(np.zeros((3000, 3000), dtype=np.uint8), "PNG")  # ~10 kB that decodes to 9 MB
    assert len(data) < 100_000
    error = _refusal(data, max_pixels=1_000_000)
    assert (error.status, error.code) == (413, "too_many_pixels") and "3000x3000" in error.message


def test_header_that_lies_about_the_size_is_refused():
    data = bytearray(encode(textured(8, 8), "BMP"))
    data[18:22] = struct.pack("<i", 9)  # width 9 in the header, 8 in the pixels
    assert _refusal(bytes(data)).status == 400


@pytest.mark.parametrize(
    "content_type, expected",
    [("image/png", "PNG"), ("IMAGE/JPEG; q=1", "JPEG"), ("image/x-ms-bmp", "BMP"), ("image/tiff", "TIFF"),
     ("application/octet-stream", None), ("", None)],
)
def test_content_types(content_type, expected):
    assert format_for_content_type(content_type) == expected


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "application/x-www-form-urlencoded",
                                          "image/gif"])
def test_wrong_content_types_are_415(content_type):
    with pytest.raises(InspectionError) as info:
        format_for_content_type(content_type)
    assert info.value.status == 415
