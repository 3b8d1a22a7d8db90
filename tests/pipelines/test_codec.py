import io
import struct

import cv2
import numpy as np
import pytest
import tifffile

from pipelines.codec import (
    DecodeError,
    InvalidSample,
    decode_image,
    decode_mask,
    encode_png,
    read_header,
    read_image,
    sniff_format,
    validate_pair,
)
from tests.serving.images import encode, grey_alpha_png, textured


def png(array: np.ndarray) -> bytes:
    return cv2.imencode(".png", array)[1].tobytes()


def refusal(data: bytes, declared: str | None = None, **kwargs) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        read_image(data, declared, **kwargs)
    return info.value


# --- read_image: formats, channels, depth ------------------------------------------


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "BMP", "TIFF"])
@pytest.mark.parametrize("channels", [None, 3])
def test_formats_decode_with_header_dimensions(image_format, channels):
    image = textured(37, 53, channels)
    if channels:
        image = image + np.array([0, 40, 80], dtype=np.uint8)  # distinct channel means expose a BGR swap
    data = encode(image, image_format)
    assert sniff_format(data) == image_format
    assert read_header(data, image_format).size == (53, 37)
    decoded = read_image(data, declared_format=image_format)
    assert decoded.pixels.shape == image.shape and decoded.pixels.dtype == np.uint8
    assert (decoded.format, decoded.channels, decoded.bit_depth) == (image_format, channels or 1, 8)
    assert (decoded.height, decoded.width) == (37, 53)
    expected_rgb = image if channels else np.repeat(image[:, :, None], 3, axis=2)
    assert decoded.rgb.shape == (37, 53, 3)
    if image_format == "JPEG":  # lossy: compare channel means
        assert np.allclose(decoded.rgb.mean(axis=(0, 1)), expected_rgb.mean(axis=(0, 1)), atol=4)
    else:
        assert np.array_equal(decoded.pixels, image)
        assert np.array_equal(decoded.rgb, expected_rgb)


@pytest.mark.parametrize("image_format", ["PNG", "BMP", "TIFF"])
def test_channel_order_is_rgb(image_format):
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[..., 0] = 255  # pure red in RGB
    assert read_image(encode(image, image_format)).pixels[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize("image_format", ["PNG", "TIFF"])
def test_full_range_sixteen_bit_keeps_the_high_byte(image_format):
    image = np.full((16, 24), 0xABCD, dtype=np.uint16)
    decoded = read_image(encode(image, image_format))
    assert decoded.bit_depth == 16 and decoded.channels == 1
    assert decoded.significant_bits == 16 and decoded.bits_source == "inferred"
    assert decoded.pixels.dtype == np.uint8 and (decoded.pixels == 0xAB).all()


def _with_sbit(png_bytes: bytes, bits: int) -> bytes:
    """The PNG with an sBIT chunk (grey: one byte) inserted after IHDR."""
    import zlib

    chunk = b"sBIT" + bytes([bits])
    sbit = struct.pack(">I", 1) + chunk + struct.pack(">I", zlib.crc32(chunk))
    ihdr_end = 8 + 8 + 13 + 4
    return png_bytes[:ihdr_end] + sbit + png_bytes[ihdr_end:]


@pytest.mark.parametrize("image_format", ["PNG", "TIFF"])
def test_a_twelve_bit_camera_frame_is_scaled_from_its_significant_bits(image_format):
    frame = np.zeros((16, 24), np.uint16)
    frame[4:8, 4:8] = 4095  # a bright 12-bit defect on a 12-bit background of 1000
    frame[frame == 0] = 1000
    decoded = read_image(encode(frame, image_format))
    assert (decoded.significant_bits, decoded.bits_source) == (12, "inferred")
    assert decoded.pixels.max() == 255 and decoded.pixels[0, 0] == 1000 >> 4  # not 4095 >> 8 = 15: near black
    assert read_image(encode(frame, image_format), bit_depth=14).pixels.max() == 4095 >> 6  # the setting


def test_png_sbit_wins_over_inference_and_the_setting():
    frame = np.full((8, 8), 900, np.uint16)  # a dark 12-bit frame: inference would say 10 bits
    decoded = read_image(_with_sbit(png(frame), 12), bit_depth=16)
    assert (decoded.significant_bits, decoded.bits_source) == (12, "file")
    assert decoded.pixels[0, 0] == 900 >> 4
    assert read_image(png(frame)).significant_bits == 10


def test_alpha_is_dropped():
    image = np.zeros((8, 8, 4), dtype=np.uint8)
    image[..., 2] = 200  # blue
    image[..., 3] = 10  # almost transparent: ignored, the camera's pixels count
    decoded = read_image(encode(image, "PNG"))
    assert decoded.channels == 4 and decoded.pixels.shape == (8, 8, 3)
    assert decoded.pixels[0, 0].tolist() == [0, 0, 200]


def test_grey_alpha_png_stays_grey():
    grey = textured(6, 5, None)
    decoded = read_image(grey_alpha_png(grey, np.full_like(grey, 30)))
    assert decoded.channels == 2 and np.array_equal(decoded.pixels, grey)


def test_big_endian_tiff_header():
    header = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 2)
    header += struct.pack(">HHI", 256, 4, 1) + struct.pack(">I", 70000)  # width, LONG
    header += struct.pack(">HHI", 257, 3, 1) + struct.pack(">HH", 300, 0)  # length, SHORT
    header += struct.pack(">I", 0)  # no next page
    assert read_header(header, "TIFF").size == (70000, 300)


def _tiff(entries: list[tuple[int, int]], next_ifd: int = 0) -> bytes:
    """A little-endian TIFF header: one IFD at 8 with LONG ``(tag, value)`` entries."""
    body = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", tag, 4, 1, value) for tag, value in entries)
    return b"II*\x00" + struct.pack("<I", 8) + body + struct.pack("<I", next_ifd)


def test_tiff_headers_are_checked_like_libtiff_reads_them():
    assert read_header(_tiff([(256, 16), (257, 16), (256, 99999)]), "TIFF").size == (16, 16)  # first tag wins
    with pytest.raises(DecodeError, match="tile width 65520 exceeds"):  # a 16x16 image with ~1 GB tiles
        read_header(_tiff([(256, 16), (257, 16), (322, 65520), (323, 65520)]), "TIFF")
    assert read_header(_tiff([(256, 100), (257, 20), (322, 112), (323, 32)]), "TIFF").size == (100, 20)
    with pytest.raises(DecodeError, match="page chain loops"):
        read_header(_tiff([(256, 16), (257, 16)], next_ifd=8), "TIFF")
    with pytest.raises(DecodeError, match="too_many_pages|more than 16 pages"):
        read_header(_tiff_chain(17), "TIFF")
    assert read_header(_tiff_chain(16), "TIFF").size == (16, 16)
    with pytest.raises(DecodeError, match="1073741824-byte strip or tile in a"):  # libtiff would read 1 GB
        read_header(_tiff([(256, 16), (257, 16), (279, 1 << 30)]), "TIFF")


def _tiff_chain(pages: int) -> bytes:
    """A TIFF header of ``pages`` 16x16 IFDs, each pointing at the next."""
    entries = struct.pack("<H", 2) + struct.pack("<HHII", 256, 4, 1, 16) + struct.pack("<HHII", 257, 4, 1, 16)
    ifd_bytes = len(entries) + 4
    ifds = [entries + struct.pack("<I", 8 + (page + 1) * ifd_bytes if page + 1 < pages else 0) for page in range(pages)]
    return b"II*\x00" + struct.pack("<I", 8) + b"".join(ifds)


def test_a_tiff_declares_its_significant_bits_with_max_sample_value():
    frame = np.full((16, 16), 900, np.uint16)  # dark: inference would say 10 bits
    written = io.BytesIO()
    tifffile.imwrite(written, frame, extratags=[(281, "H", 1, 4095, True)])  # MaxSampleValue
    decoded = read_image(written.getvalue(), bit_depth=16)
    assert (decoded.significant_bits, decoded.bits_source) == (12, "file")
    assert decoded.pixels[0, 0] == 900 >> 4


# --- read_image: refusals ----------------------------------------------------------


@pytest.mark.parametrize(
    "data, declared, status, code",
    [
        (b"", None, 400, "empty_body"),
        (b"hello, this is text", None, 400, "not_an_image"),
        (b"GIF89a" + bytes(64), None, 415, "unsupported_format"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(32), None, 415, "unsupported_format"),
        (encode(textured(8, 8)), "JPEG", 415, "content_type_mismatch"),
        (encode(textured(8, 8))[:20], None, 400, "truncated_image"),
        (encode(np.zeros((4, 4), np.float32), "TIFF"), None, 415, "unsupported_sample_type"),
    ],
)
def test_bad_bytes_are_refused_with_a_reason(data, declared, status, code):
    error = refusal(data, declared)
    assert (error.status, error.code) == (status, code)
    assert error.message and str(error) == error.message


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "BMP", "TIFF"])
def test_truncated_images_are_refused(image_format):
    data = encode(textured(64, 64), image_format)
    error = refusal(data[: len(data) // 2])
    assert error.status == 400 and error.code in ("truncated_image", "corrupt_image")


def test_decompression_bomb_is_refused_before_decoding():
    data = encode(np.zeros((3000, 3000), dtype=np.uint8), "PNG")  # ~10 kB that decodes to 9 MB
    assert len(data) < 100_000
    error = refusal(data, max_pixels=1_000_000)
    assert (error.status, error.code) == (413, "too_many_pixels") and "3000x3000" in error.message
    assert read_image(data).pixels.shape == (3000, 3000)  # no cap unless one is asked for


def test_header_that_lies_about_the_size_is_refused():
    data = bytearray(encode(textured(8, 8), "BMP"))
    data[18:22] = struct.pack("<i", 9)  # width 9 in the header, 8 in the pixels
    assert refusal(bytes(data)).status == 400


def test_sizes_opencv_refuses_are_a_decode_error_not_a_crash():
    data = bytearray(encode(np.zeros((1, 8), np.uint8), "BMP"))
    data[18:22] = struct.pack("<i", 2_000_000)  # wider than OpenCV decodes (2^20)
    error = refusal(bytes(data), max_pixels=10_000_000)
    assert (error.status, error.code) == (400, "corrupt_image") and "BMP" in error.message


# --- ingestion: decode_image / decode_mask / validate_pair -------------------------


def test_grey_stays_single_channel_and_colour_becomes_rgb():
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert np.array_equal(decode_image(png(grey)), grey)
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's order
    assert decode_image(png(bgr))[0, 0].tolist() == [0, 0, 200]
    rgba = np.dstack([bgr, np.full((4, 4), 255, np.uint8)])
    assert decode_image(png(rgba)).shape == (4, 4, 3)
    sixteen = np.full((4, 4), 65535, np.uint16)
    assert decode_image(png(sixteen)).max() == 255


def test_png_round_trip_is_lossless():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(decode_image(encode_png(rgb)), rgb)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"definitely not an image", "not a decodable image"),
])
def test_undecodable(data, reason):
    with pytest.raises(InvalidSample, match=reason):
        decode_image(data)


def test_truncated_image_is_rejected():
    data = cv2.imencode(".jpg", np.full((64, 64), 128, np.uint8))[1].tobytes()
    with pytest.raises(InvalidSample, match="truncated"):
        decode_image(data[: len(data) // 2])


def test_refusals_name_the_part_and_the_code():
    with pytest.raises(InvalidSample, match="unsupported_format") as info:
        decode_mask(b"GIF89a" + bytes(64))
    assert info.value.part == "mask" and isinstance(info.value.__cause__, DecodeError)


def test_masks_become_0_255():
    labels = np.array([[0, 1], [1, 0]], np.uint8)  # 0/1 label masks count as binary
    assert decode_mask(png(labels)).tolist() == [[0, 255], [255, 0]]
    jpeg_like = np.array([[0, 250, 3, 255]] * 100, np.uint8)
    assert set(np.unique(decode_mask(png(jpeg_like)))) == {0, 255}
    colour = np.dstack([labels * 255] * 3)
    assert decode_mask(png(colour)).tolist() == [[0, 255], [255, 0]]


def test_sixteen_bit_label_mask_is_binarised_before_its_depth_drops():
    labels = np.zeros((4, 6), np.uint16)
    labels[1:3, 2:5] = 1  # high byte 0 everywhere: would be all background after >> 8
    mask = decode_mask(png(labels))
    assert mask.dtype == np.uint8 and mask.tolist() == (labels * 255).astype(np.uint8).tolist()


def test_sixteen_bit_mask_ambiguity_scales_with_depth():
    jpeg_like = np.array([[0, 64000, 700, 65535]] * 100, np.uint16)
    assert decode_mask(png(jpeg_like)).tolist() == [[0, 255, 0, 255]] * 100
    ramp = np.tile(np.linspace(0, 65535, 50).astype(np.uint16), (10, 1))
    with pytest.raises(InvalidSample, match=r"not binary.*8224 < value < 57311"):
        decode_mask(png(ramp))


def test_grey_mask_is_not_binary():
    ramp = np.tile(np.linspace(0, 255, 50).astype(np.uint8), (10, 1))
    with pytest.raises(InvalidSample, match=r"not binary.*32 < value < 223"):
        decode_mask(png(ramp))


def test_mask_size_must_match_image():
    with pytest.raises(InvalidSample, match="differs from image size"):
        validate_pair(png(np.zeros((8, 8), np.uint8)), png(np.zeros((8, 6), np.uint8)))
    image, mask = validate_pair(png(np.zeros((8, 6), np.uint8)), None)
    assert mask.shape == (8, 6) and not mask.any()
