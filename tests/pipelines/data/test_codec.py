import cv2
import numpy as np
import pytest

from pipelines.data.codec import InvalidSample, decode_image, decode_mask, encode_png, validate_pair


def png(array: np.ndarray) -> bytes:
    return cv2.imencode(".png", array)[1].tobytes()


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


def test_masks_become_0_255():
    labels = np.array([[0, 1], [1, 0]], np.uint8)  # 0/1 label masks count as binary
    assert decode_mask(png(labels)).tolist() == [[0, 255], [255, 0]]
    jpeg_like = np.array([[0, 250, 3, 255]] * 100, np.uint8)
    assert set(np.unique(decode_mask(png(jpeg_like)))) == {0, 255}


def test_grey_mask_is_not_binary():
    ramp = np.tile(np.linspace(0, 255, 50).astype(np.uint8), (10, 1))
    with pytest.raises(InvalidSample, match="not binary"):
        decode_mask(png(ramp))


def test_mask_size_must_match_image():
    with pytest.raises(InvalidSample, match="differs from image size"):
        validate_pair(png(np.zeros((8, 8), np.uint8)), png(np.zeros((8, 6), np.uint8)))
    image, mask = validate_pair(png(np.zeros((8, 6), np.uint8)), None)
    assert mask.shape == (8, 6) and not mask.any()
