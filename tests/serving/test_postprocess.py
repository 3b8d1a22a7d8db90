import numpy as np
import pytest

from serving.postprocess import (mask_to_png_base64, png_base64_to_mask, png_base64_to_probability,
                                 probability_to_png_base64)


def test_mask_png_round_trip():
    mask = np.random.default_rng(0).random((50, 80)) >= 0.5
    assert np.array_equal(png_base64_to_mask(mask_to_png_base64(mask)), mask)


def test_probability_png_round_trip_within_16_bit_quantisation():
    probability = np.random.default_rng(0).random((37, 91)).astype(np.float32)
    back = png_base64_to_probability(probability_to_png_base64(probability))
    assert back.shape == probability.shape and np.abs(back - probability).max() <= 0.5 / 65535 + 1e-7


def test_an_8_bit_png_is_not_a_probability_map():
    with pytest.raises(ValueError, match="16-bit"):
        png_base64_to_probability(mask_to_png_base64(np.zeros((4, 4), bool)))
