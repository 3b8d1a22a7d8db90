import numpy as np
import pytest

from jaffnet.preprocess import normalize, to_rgb


def authors_reference(image: np.ndarray) -> np.ndarray:
    """The authors' ToTensorLab (flag 0) on one HxW(x1|x3) uint8 image, in float64, CHW.
    Only change: an all-zero image is left at zero instead of dividing by 0."""
    image = image.astype(np.float64) / 255  # their frames reach ToTensorLab as floats in [0, 1]
    if image.ndim == 2:
        image = image[:, :, None]
    if np.max(image) > 0:
        image = image / np.max(image)
    out = np.zeros((image.shape[0], image.shape[1], 3))
    for channel in range(3):
        out[:, :, channel] = (image[:, :, 0 if image.shape[2] == 1 else channel] - 0.4669) / 0.2437
    return out.transpose(2, 0, 1)


def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, (32, 48, 3), dtype=np.uint8),
        rng.integers(10, 90, (32, 32, 3), dtype=np.uint8),  # dark: the per-image max matters
        rng.integers(0, 256, (32, 32), dtype=np.uint8),  # grayscale
        rng.integers(0, 60, (32, 32, 1), dtype=np.uint8),
        np.zeros((32, 32, 3), np.uint8),
        np.zeros((32, 32), np.uint8),
    ]


@pytest.mark.parametrize("image", images(), ids=["rgb", "dark-rgb", "gray", "dark-gray-1ch", "zero-rgb", "zero-gray"])
def test_authors_normalisation_is_the_authors_formula(image):
    got = normalize(to_rgb(image)[None], "authors")
    assert got.dtype == np.float32 and got.shape == (1, 3, 32, image.shape[1]) and np.isfinite(got).all()
    np.testing.assert_allclose(got[0], authors_reference(image), rtol=0, atol=2e-6)


def test_authors_normalisation_uses_each_images_own_maximum():
    dark, bright = images()[1], images()[0][:, :32]
    batch = normalize(np.stack([dark, bright]), "authors")
    np.testing.assert_array_equal(batch[0], normalize(dark[None], "authors")[0])
    np.testing.assert_allclose(batch[0], authors_reference(dark), rtol=0, atol=2e-6)


def test_imagenet_normalisation_is_unchanged():
    batch = np.stack([to_rgb(image)[:, :32] for image in images()])
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    expected = np.ascontiguousarray(np.moveaxis((batch.astype(np.float32) / 255.0 - mean) / std, -1, -3))
    got = normalize(batch, "imagenet")
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)


def test_the_normalisation_is_required_and_checked():
    batch = images()[0][None]
    with pytest.raises(TypeError):
        normalize(batch)  # no silent default
    with pytest.raises(ValueError, match=r"normalization must be one of \('imagenet', 'authors'\), got 'bgr'"):
        normalize(batch, "bgr")
