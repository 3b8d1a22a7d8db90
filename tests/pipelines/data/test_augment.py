import numpy as np
import pytest

from pipelines.data.augment import AugmentConfig, augment_pair, geometric, photometric, sample_rng

SIZE = 32
DEFAULT = AugmentConfig()
GEOMETRY_ONLY = DEFAULT.model_copy(update=dict(brightness=0.0, contrast=[1.0, 1.0], gamma=[1.0, 1.0],
                                               noise_p=0.0, blur_p=0.0))
NOTHING = GEOMETRY_ONLY.model_copy(update=dict(crop_p=0.0, hflip_p=0.0, vflip_p=0.0, rot90=False))


def painted_pair(channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """An asymmetric L-shaped mask on a non-square frame, painted into the image."""
    mask = np.zeros((48, 40), np.uint8)
    mask[6:30, 5:12] = 255
    mask[24:30, 5:30] = 255
    image = np.repeat(mask[:, :, None], channels, axis=2) if channels > 1 else mask.copy()
    return image, mask


def assert_aligned(image: np.ndarray, mask: np.ndarray) -> None:
    assert image.shape[:2] == mask.shape == (SIZE, SIZE)
    grey = image if image.ndim == 2 else image[..., 0]
    # resizing blurs the painted edge; binarised like the mask it must match exactly
    assert np.array_equal(np.where(grey >= 128, 255, 0), mask)
    assert mask.any()


@pytest.mark.parametrize("transform", [
    dict(crop_p=1.0), dict(hflip_p=1.0), dict(vflip_p=1.0), dict(rot90=True), dict(),
])
def test_each_geometric_transform_keeps_the_mask_on_the_painted_pixels(transform):
    config = NOTHING.model_copy(update=transform)
    for seed in range(12):
        image, mask = painted_pair()
        assert_aligned(*augment_pair(image, mask, SIZE, np.random.default_rng(seed), config))


def test_flips_and_rotations_really_move_the_pixels():
    image, mask = painted_pair(channels=1)
    _, still = geometric(image, mask, SIZE, np.random.default_rng(0), NOTHING)
    _, flipped = geometric(image, mask, SIZE, np.random.default_rng(0), NOTHING.model_copy(update=dict(hflip_p=1.0)))
    assert np.array_equal(flipped, still[:, ::-1]) and not np.array_equal(flipped, still)


def test_all_geometry_together_on_grey_and_colour():
    for channels in (1, 3):
        for seed in range(20):
            image, mask = painted_pair(channels)
            assert_aligned(*augment_pair(image, mask, SIZE, np.random.default_rng(seed), GEOMETRY_ONLY))


def test_photometric_changes_the_image_only_and_keeps_the_defect_visible():
    strong = DEFAULT.model_copy(update=dict(noise_p=1.0, blur_p=1.0))
    for seed in range(10):
        image, mask = painted_pair()
        out_image, out_mask = augment_pair(image, mask, SIZE, np.random.default_rng(seed), strong)
        assert set(np.unique(out_mask)) <= {0, 255}
        agreement = np.mean((out_image[..., 0] > 128) == (out_mask > 0))
        assert agreement > 0.9


def test_photometric_returns_a_new_array():
    image = np.full((8, 8), 100, np.uint8)
    image.setflags(write=False)  # as in Ray Data batches
    out = photometric(image, np.random.default_rng(0), DEFAULT)
    assert out is not image and out.dtype == np.uint8


def test_draws_depend_on_seed_epoch_and_id_only():
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    mask = np.zeros((40, 40), np.uint8)

    def run(seed, epoch, sample_id):
        return augment_pair(image, mask, SIZE, sample_rng(seed, epoch, sample_id), DEFAULT)[0]

    assert np.array_equal(run(0, 0, "a"), run(0, 0, "a"))
    assert not np.array_equal(run(0, 0, "a"), run(0, 1, "a"))
    assert not np.array_equal(run(0, 0, "a"), run(1, 0, "a"))
    assert not np.array_equal(run(0, 0, "a"), run(0, 0, "b"))


def test_settings_are_checked():
    with pytest.raises(ValueError, match="wobble"):
        AugmentConfig(wobble=3)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        AugmentConfig(hflip_p=1.5)
    with pytest.raises(ValueError, match="low <= high"):
        AugmentConfig(crop_scale=[1.0, 0.5])


def test_tile_mode_takes_native_crops_aligned_with_their_mask():
    image, mask = painted_pair()
    image = image.copy()
    image[..., 1] = np.arange(40, dtype=np.uint8)[None, :] * 5  # column ids: a native crop keeps them 1:1
    for seed in range(12):
        out_image, out_mask = geometric(image, mask, SIZE, np.random.default_rng(seed), NOTHING, "tile")
        assert out_image.shape[:2] == out_mask.shape == (SIZE, SIZE)
        assert np.array_equal(np.where(out_image[..., 0] >= 128, 255, 0), out_mask)
        assert np.all(np.diff(out_image[0, :, 1].astype(int)) == 5)  # not resized


def test_tile_mode_pads_frames_smaller_than_a_tile_and_scale_jitter_resizes():
    image, mask = painted_pair()
    small_image, small_mask = image[:20, :25], mask[:20, :25]
    out_image, out_mask = geometric(small_image, small_mask, SIZE, np.random.default_rng(0), NOTHING, "tile")
    assert out_image.shape[:2] == (SIZE, SIZE) and np.array_equal(out_image[:20, :25], small_image)
    jittered = NOTHING.model_copy(update=dict(tile_scale=(1.5, 1.5)))
    out_image, out_mask = geometric(image, mask, SIZE, np.random.default_rng(0), jittered, "tile")
    assert out_image.shape[:2] == out_mask.shape == (SIZE, SIZE)
    with pytest.raises(ValueError, match="input mode"):
        geometric(image, mask, SIZE, np.random.default_rng(0), NOTHING, "stretch")
