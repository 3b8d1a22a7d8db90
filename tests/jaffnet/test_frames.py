import numpy as np
import pytest

from jaffnet.contract import InputContract
from jaffnet.frames import model_inputs, plan_frame, predict_frames, resize_image
from jaffnet.preprocess import normalize
from tests.serving.images import textured

RESIZE = InputContract(image_size=64, mode="resize")
TILE = InputContract(image_size=64, mode="tile", tile_overlap=0.25)


def brightness(batch: np.ndarray) -> np.ndarray:
    """A stand-in model: the normalised red channel squashed to [0, 1]."""
    return 1 / (1 + np.exp(-batch[:, 0]))


@pytest.mark.parametrize("contract", [RESIZE, TILE], ids=["resize", "tile"])
@pytest.mark.parametrize("height,width", [(64, 64), (128, 128), (80, 150), (20, 45)])
def test_every_frame_comes_back_at_its_own_size(contract, height, width):
    frame = textured(height, width)
    plan = plan_frame(contract, height, width)
    inputs = plan.split(frame)
    assert all(x.shape == (64, 64, 3) for x in inputs) and len(inputs) == len(plan)
    probability = plan.merge(list(brightness(model_inputs(inputs, contract.normalization))))
    assert probability.shape == (height, width) and probability.dtype == np.float32
    assert 0 <= probability.min() and probability.max() <= 1


def test_resize_mode_is_one_input_and_tile_mode_native_tiles():
    assert len(plan_frame(RESIZE, 300, 500)) == 1
    assert len(plan_frame(TILE, 300, 500)) == len(plan_frame(TILE, 300, 500).grid) > 1
    tile = plan_frame(TILE, 128, 128).split(textured(128, 128))[0]
    assert np.array_equal(tile, textured(128, 128)[:64, :64])  # native pixels, not resized


def test_tile_mode_reproduces_a_pixel_exact_map():
    frame = textured(100, 230)
    plan = plan_frame(TILE, 100, 230)
    merged = plan.merge([x[:, :, 0].astype(np.float32) / 255 for x in plan.split(frame)])
    np.testing.assert_allclose(merged, frame[:, :, 0] / 255, atol=1e-6)


def test_predict_frames_batches_across_frames_and_keeps_order():
    frames = [textured(64, 64), textured(200, 90), textured(30, 30), textured(128, 300)]
    calls = []

    def predict(batch):
        calls.append(len(batch))
        return brightness(batch)

    results = list(predict_frames(frames, TILE, predict, batch_size=4, image_of=lambda f: f))
    assert [r[0] is f for r, f in zip(results, frames)] == [True] * 4
    assert all(p.shape == f.shape[:2] for f, p in results)
    assert max(calls) == 4 and sum(calls) == sum(len(plan_frame(TILE, *f.shape[:2])) for f in frames)
    one_by_one = [plan_frame(TILE, *f.shape[:2]) for f in frames]
    for (frame, got), plan in zip(results, one_by_one):
        np.testing.assert_allclose(got, plan.merge(list(brightness(model_inputs(plan.split(frame), "imagenet")))),
                                   atol=1e-6)


def test_masks_are_split_with_their_frames():
    frame, mask = textured(128, 96), np.zeros((128, 96), np.uint8)
    mask[10:30, 10:30] = 255
    seen = []

    def predict(batch, masks):
        seen.append(masks)
        return brightness(batch)

    list(predict_frames([(frame, mask)], TILE, predict, image_of=lambda p: p[0], mask_of=lambda p: p[1]))
    masks = np.concatenate(seen)
    assert masks.shape[1:] == (1, 64, 64) and set(np.unique(masks)) == {0.0, 1.0}


@pytest.mark.parametrize("normalization", ["imagenet", "authors"])
def test_inputs_are_normalised_like_training(normalization):
    image = textured(64, 64)
    np.testing.assert_array_equal(model_inputs([image], normalization), normalize(image[None], normalization))
    gray = image[:, :, 0]
    np.testing.assert_array_equal(model_inputs([gray], normalization),
                                  normalize(np.repeat(gray[None, :, :, None], 3, axis=3), normalization))
    assert resize_image(textured(200, 100), 64).shape == (64, 64, 3)


def test_predict_frames_feeds_the_model_its_contracts_normalisation():
    frames = [textured(90, 120, seed=1), textured(64, 64, channels=None, seed=2)]  # dark RGB, grayscale
    contract = InputContract(image_size=64, mode="resize", normalization="authors")
    seen = []

    def predict(batch):
        seen.append(batch)
        return brightness(batch)

    list(predict_frames(frames, contract, predict, batch_size=2, image_of=lambda f: f))
    (batch,) = seen
    for got, frame in zip(batch, frames):
        rgb = resize_image(np.repeat(frame[:, :, None], 3, axis=2) if frame.ndim == 2 else frame, 64).astype(float)
        expected = ((rgb / rgb.max() - 0.4669) / 0.2437).transpose(2, 0, 1)  # the authors' data_loader
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)
    assert not np.allclose(batch, model_inputs([resize_image(f, 64) for f in frames], "imagenet"), atol=0.1)


def mirror_sensitive(batch: np.ndarray) -> np.ndarray:
    """A stand-in model that is not mirror-symmetric: brightness plus a left-to-right ramp."""
    return np.clip(0.5 * brightness(batch) + np.linspace(0, 0.5, batch.shape[-1], dtype=np.float32), 0, 1)


@pytest.mark.parametrize("mode", ["resize", "tile"])
@pytest.mark.parametrize("views", [2, 4, 8])
def test_mirrored_views_are_the_mean_of_the_maps_mirrored_back(mode, views):
    frame = textured(80, 150)
    plain = InputContract(image_size=64, mode=mode)
    mirrored = InputContract(image_size=64, mode=mode, flip_views=views)
    plan = plan_frame(mirrored, 80, 150)
    inputs = plan.split(frame)
    assert len(inputs) == len(plan) == views * len(plan_frame(plain, 80, 150))
    got = plan.merge(list(mirror_sensitive(model_inputs(inputs, "imagenet"))))
    # the same thing by hand: each view's map of the frame, mirrored back, averaged
    views_by_hand = [(t, ax) for t in (False, True) for ax in [(), (1,), (0,), (0, 1)]][:views]
    by_hand = []
    for transposed, ax in views_by_hand:
        view_plan = plan_frame(plain, 80, 150)
        swap = (lambda a: np.swapaxes(a, 0, 1)) if transposed else (lambda a: a)
        mirrored_inputs = [swap(np.flip(x, ax)) for x in view_plan.split(frame)]
        maps = [np.flip(swap(p), ax) for p in mirror_sensitive(model_inputs(mirrored_inputs, "imagenet"))]
        by_hand.append(view_plan.merge(maps))
    np.testing.assert_allclose(got, np.mean(by_hand, axis=0), atol=1e-6)
    # a mirror-symmetric model gives the plain map; a ramp model does not
    np.testing.assert_allclose(plan.merge(list(brightness(model_inputs(inputs, "imagenet")))),
                               plan_frame(plain, 80, 150).merge(
                                   list(brightness(model_inputs(plan_frame(plain, 80, 150).split(frame), "imagenet")))),
                               atol=1e-6)
    ramp_plain = plan_frame(plain, 80, 150).merge(
        list(mirror_sensitive(model_inputs(plan_frame(plain, 80, 150).split(frame), "imagenet"))))
    assert np.abs(got - ramp_plain).max() > 0.1


def test_mirrored_masks_follow_their_inputs_and_a_short_merge_is_refused():
    frame, mask = textured(64, 64), np.zeros((64, 64), np.uint8)
    mask[5:10, 40:60] = 255
    plan = plan_frame(InputContract(image_size=64, flip_views=4), 64, 64)
    for axes, image, view_mask in zip([(), (1,), (0,), (0, 1)], plan.split(frame), plan.split_mask(mask)):
        np.testing.assert_array_equal(image, np.flip(frame, axes))
        np.testing.assert_array_equal(view_mask, np.flip(mask, axes))
    views = plan.split_mask(mask)
    assert [m[5:10, 40:60].all() for m in views] == [True, False, False, False]
    assert views[1][5:10, 4:24].all() and views[2][54:59, 40:60].all() and views[3][54:59, 4:24].all()
    with pytest.raises(ValueError, match="expected 4 probability maps, got 1"):
        plan.merge([np.zeros((64, 64), np.float32)])
