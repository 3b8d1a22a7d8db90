import numpy as np
import pytest

from serving.postprocess import decode_probability, encode_probability, mask_to_png_base64, png_base64_to_mask


def test_mask_png_round_trip():
    mask = np.random.default_rng(0).random((50, 80)) >= 0.5
    assert np.array_equal(png_base64_to_mask(mask_to_png_base64(mask)), mask)


def test_the_probability_map_round_trips_exactly():
    probability = np.random.default_rng(0).random((37, 91)).astype(np.float32) ** 8  # many near-zero values
    encoded = encode_probability(probability)
    assert (encoded["height"], encoded["width"]) == (37, 91)
    assert np.array_equal(decode_probability(encoded), probability)


def test_a_corrupt_probability_map_is_refused():
    encoded = encode_probability(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="not 4x5"):
        decode_probability({**encoded, "width": 5})
    with pytest.raises(ValueError, match="encoding"):
        decode_probability({**encoded, "encoding": "png16"})
