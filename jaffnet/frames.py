"""The one frame -> probability-map path: a frame of any size through a model's input contract.

``plan_frame(contract, height, width)`` gives a plan whose ``split`` turns the frame into
model-size inputs (one resized image, or native tiles; each also mirrored when the contract
asks for ``flip_views``) and whose ``merge`` turns their probabilities into one map at the
frame's own size. ``predict_frames`` drives it with
any batch predictor. Training validation, calibration, ``jaffnet evaluate`` and the
Serve endpoint (which sends the inputs to its batched model deployment between
``split`` and ``merge``) all go through these functions, nothing else.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import cv2
import numpy as np

from jaffnet.contract import InputContract
from jaffnet.preprocess import normalize, to_rgb
from jaffnet.tiling import TileGrid

Item = TypeVar("Item")


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Any HxW(xC) uint8 image -> ``size`` x ``size`` (area averaging when shrinking)."""
    shrinking = size < max(image.shape[:2])
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A 0/255 mask resized like its image, then re-binarised."""
    return np.where(resize_image(mask, size) >= 128, np.uint8(255), np.uint8(0))


def resize_probability(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a probability map to ``height`` x ``width``, clipped to [0, 1]."""
    prob = np.asarray(prob, dtype=np.float32)
    if prob.shape != (height, width):
        prob = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(prob, 0.0, 1.0)


@dataclass(frozen=True)
class ResizePlan:
    height: int
    width: int
    size: int

    def __len__(self) -> int:
        return 1

    def split(self, frame: np.ndarray) -> list[np.ndarray]:
        return [resize_image(frame, self.size)]

    def split_mask(self, mask: np.ndarray) -> list[np.ndarray]:
        return [resize_mask(mask, self.size)]

    def merge(self, probabilities: Sequence[np.ndarray]) -> np.ndarray:
        (probability,) = probabilities
        return resize_probability(probability, self.height, self.width)


@dataclass(frozen=True)
class TilePlan:
    grid: TileGrid
    stitch: str

    def __len__(self) -> int:
        return len(self.grid)

    def split(self, frame: np.ndarray) -> list[np.ndarray]:
        return self.grid.split(frame)

    def split_mask(self, mask: np.ndarray) -> list[np.ndarray]:
        return self.grid.split(mask)

    def merge(self, probabilities: Sequence[np.ndarray]) -> np.ndarray:
        return np.clip(self.grid.stitch(list(probabilities), self.stitch), 0.0, 1.0)


# Each view, in FLIP_VIEWS order: (transposed?, image axes mirrored): as is, left-right, up-down,
# both; then the same four of the transpose (model inputs are square, so all eight are inputs).
_VIEWS: tuple[tuple[bool, tuple[int, ...]], ...] = tuple(
    (transposed, axes) for transposed in (False, True) for axes in ((), (1,), (0,), (0, 1)))


def _to_view(array: np.ndarray, view: tuple[bool, tuple[int, ...]]) -> np.ndarray:
    transposed, axes = view
    array = np.flip(array, axes) if axes else array
    return np.ascontiguousarray(np.swapaxes(array, 0, 1) if transposed else array)


def _from_view(array: np.ndarray, view: tuple[bool, tuple[int, ...]]) -> np.ndarray:
    """A view's map back in the input's orientation: a numpy view, not a copy (``merge``'s mean copies)."""
    transposed, axes = view
    array = np.swapaxes(array, 0, 1) if transposed else array
    return np.flip(array, axes) if axes else array


@dataclass(frozen=True)
class MirroredPlan:
    """``views`` mirrored copies of every input of ``base``; ``merge`` mirrors each map back and
    averages them per input before ``base`` assembles the frame's map."""
    base: ResizePlan | TilePlan
    views: int

    def __len__(self) -> int:
        return self.views * len(self.base)

    def _mirrored(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return [_to_view(array, view) for view in _VIEWS[:self.views] for array in arrays]

    def split(self, frame: np.ndarray) -> list[np.ndarray]:
        return self._mirrored(self.base.split(frame))

    def split_mask(self, mask: np.ndarray) -> list[np.ndarray]:
        return self._mirrored(self.base.split_mask(mask))

    def merge(self, probabilities: Sequence[np.ndarray]) -> np.ndarray:
        count = len(self.base)
        if len(probabilities) != len(self):
            raise ValueError(f"expected {len(self)} probability maps, got {len(probabilities)}")
        views = [[_from_view(np.asarray(p, dtype=np.float32), view) for p in probabilities[i * count:(i + 1) * count]]
                 for i, view in enumerate(_VIEWS[:self.views])]
        return self.base.merge([np.mean(per_input, axis=0) for per_input in zip(*views)])


FramePlan = ResizePlan | TilePlan | MirroredPlan


def plan_frame(contract: InputContract, height: int, width: int) -> FramePlan:
    if height < 1 or width < 1:
        raise ValueError(f"a frame needs at least one pixel, got {width}x{height}")
    if contract.mode == "resize":
        base: ResizePlan | TilePlan = ResizePlan(height, width, contract.image_size)
    else:
        base = TilePlan(TileGrid.plan(height, width, contract.image_size, contract.tile_overlap_px), contract.stitch)
    return base if contract.flip_views == 1 else MirroredPlan(base, contract.flip_views)


def model_inputs(images: Sequence[np.ndarray], normalization: str) -> np.ndarray:
    """Model-size uint8 images (grayscale or RGB) -> the float32 ``(N, 3, S, S)`` batch that
    ``normalization`` (the input contract's) gives."""
    return normalize(np.stack([to_rgb(image) for image in images]), normalization)


# float32 (N, 3, S, S) [, masks] -> float32 (N, S, S) in [0, 1]
Predict = Callable[..., np.ndarray]


def predict_frames(items: Iterable[Item], contract: InputContract, predict: Predict, *, batch_size: int = 8,
                   image_of: Callable[[Item], np.ndarray] = lambda item: item.image,
                   mask_of: Callable[[Item], np.ndarray] | None = None,
                   ) -> Iterator[tuple[Item, np.ndarray]]:
    """``(item, probability map at the frame's size)`` for every item, in order.

    Inputs of consecutive frames share batches of ``batch_size`` (a large frame's tiles
    span several). With ``mask_of`` (for a validation loss) each item's 0/255 mask is
    split the same way and ``predict(inputs, masks)`` gets them as float32
    ``(N, 1, S, S)`` in {0, 1}.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    waiting: deque[tuple[Any, FramePlan]] = deque()  # frames whose inputs are queued, in order
    inputs: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    outputs: list[np.ndarray] = []

    def run(count: int) -> None:
        batch = model_inputs(inputs[:count], contract.normalization)
        if mask_of is None:
            predicted = predict(batch)
        else:
            predicted = predict(batch, (np.stack(masks[:count])[:, None] >= 128).astype(np.float32))
        outputs.extend(np.asarray(predicted, dtype=np.float32))
        del inputs[:count], masks[:count]

    def finished() -> Iterator[tuple[Any, np.ndarray]]:
        while waiting and len(waiting[0][1]) <= len(outputs):
            item, plan = waiting.popleft()
            yield item, plan.merge(outputs[:len(plan)])
            del outputs[:len(plan)]

    for item in items:
        frame = image_of(item)
        plan = plan_frame(contract, frame.shape[0], frame.shape[1])
        inputs.extend(plan.split(frame))
        if mask_of is not None:
            masks.extend(plan.split_mask(mask_of(item)))
        waiting.append((item, plan))
        while len(inputs) >= batch_size:
            run(batch_size)
        yield from finished()
    if inputs:
        run(len(inputs))
    yield from finished()
