import numpy as np
import pytest

from jaffnet.decision import DecisionRule, judge
from jaffnet.tiling import TileGrid, tile_starts
from tests.serving.images import textured


@pytest.mark.parametrize("length, tile, overlap", [(64, 64, 16), (65, 64, 16), (300, 64, 16), (1000, 256, 64),
                                                   (200, 64, 0)])
def test_tile_starts_cover_with_the_requested_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    assert all(later - earlier <= tile - overlap for earlier, later in zip(starts, starts[1:]))


def test_split_then_stitch_is_the_identity_at_native_resolution():
    frame = np.random.default_rng(0).random((150, 470)).astype(np.float32)
    grid = TileGrid.plan(150, 470, tile=64, overlap=16)
    tiles = grid.split(frame)
    assert len(tiles) == len(grid) == 3 * 10 and all(t.shape == (64, 64) for t in tiles)
    for mode in ("mean", "max"):
        assert np.allclose(grid.stitch(tiles, mode), frame)


def test_small_frames_are_padded_not_stretched():
    frame = textured(20, 45)
    grid = TileGrid.plan(20, 45, tile=64, overlap=16)
    (tile,) = grid.split(frame)
    assert tile.shape == (64, 64, 3)
    assert np.array_equal(tile[:20, :45], frame)  # the frame itself, pixel for pixel
    assert np.array_equal(tile[20:, :45], np.repeat(frame[-1:], 44, axis=0))  # edge-replicated padding
    assert grid.stitch([np.ones((64, 64), np.float32)]).shape == (20, 45)


def test_a_line_scan_frame_is_tiled_in_both_directions():
    grid = TileGrid.plan(40, 1000, tile=64, overlap=16)  # shorter than a tile, far wider
    assert grid.ys == (0,) and len(grid.xs) == 21


def test_stitch_max_keeps_a_detection_that_mean_halves():
    grid = TileGrid.plan(64, 112, tile=64, overlap=16)  # two tiles sharing columns 48..63
    left, right = np.zeros((64, 64), np.float32), np.zeros((64, 64), np.float32)
    left[10, 50] = 1.0  # seen only by the left tile
    assert grid.stitch([left, right], "max")[10, 50] == 1.0
    assert grid.stitch([left, right], "mean")[10, 50] == 0.5


def test_tiling_finds_a_few_pixel_defect_a_resize_would_erase():
    # A frame ten times wider than the model input with a 3x3 defect; the "model" marks
    # near-white pixels, so the expected answer is known exactly.
    frame = textured(160, 640)
    frame[101:104, 517:520] = 255
    grid = TileGrid.plan(160, 640, tile=64, overlap=16)
    probabilities = grid.stitch([(t.min(axis=2) > 200).astype(np.float32) for t in grid.split(frame)])
    verdict = judge(probabilities, DecisionRule(pixel_threshold=0.5, image_threshold=0.3))
    assert verdict.decision == "NG" and verdict.defect_area_px == 9
    (region,) = verdict.regions
    assert (region.x, region.y, region.width, region.height) == (517, 101, 3, 3)


def test_plan_refuses_an_overlap_as_large_as_the_tile():
    with pytest.raises(ValueError, match="overlap"):
        TileGrid.plan(100, 100, tile=64, overlap=64)
