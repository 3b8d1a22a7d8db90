"""Paired augmentation with OpenCV: geometry moves image and mask together, photometry
changes the image only.

Every draw comes from the ``rng`` passed in; :func:`sample_rng` makes it a function of
``(seed, epoch, sample id)``, so an epoch is reproducible, epochs differ, and the result
does not depend on which Ray worker handles the sample or in what order.
"""

from __future__ import annotations

import zlib
from typing import Annotated

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict

from jaffnet.frames import resize_image, resize_mask
from pipelines.config_rules import rule

_PROBABILITY = rule(lambda p: 0 <= p <= 1, "in [0, 1]")
_AT_LEAST_0 = rule(lambda value: value >= 0, ">= 0")
_RANGE = rule(lambda pair: len(pair) == 2 and 0 <= pair[0] <= pair[1], "[low, high] with 0 <= low <= high")


class AugmentConfig(BaseModel):
    """The training augmentation: the ``augment`` section of the training config
    (``pipelines/training/train.yaml``, ``--set augment.<key>=value``), validated here so
    the data layer needs nothing from training. Validation and test frames get none."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    # geometric: one draw moves image and mask together
    crop_p: Annotated[float, _PROBABILITY] = 0.7
    crop_scale: Annotated[list[float], _RANGE] = [0.6, 1.0]
    tile_scale: Annotated[list[float], _RANGE] = [1.0, 1.0]
    hflip_p: Annotated[float, _PROBABILITY] = 0.5
    vflip_p: Annotated[float, _PROBABILITY] = 0.5
    rot90: bool = True
    # photometric: the image only
    brightness: Annotated[float, _AT_LEAST_0] = 0.1
    contrast: Annotated[list[float], _RANGE] = [0.8, 1.2]
    gamma: Annotated[list[float], _RANGE] = [0.8, 1.25]
    noise_p: Annotated[float, _PROBABILITY] = 0.3
    noise_std: Annotated[list[float], _RANGE] = [0.005, 0.03]
    blur_p: Annotated[float, _PROBABILITY] = 0.2
    blur_sigma: Annotated[list[float], _RANGE] = [0.3, 1.2]


def sample_rng(seed: int, epoch: int, sample_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, zlib.crc32(sample_id.encode())])


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Both to ``size`` x ``size`` exactly as the ``resize`` input contract resizes frames."""
    return resize_image(image, size), resize_mask(mask, size)


def _native_crop(image: np.ndarray, mask: np.ndarray, side: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A ``side`` x ``side`` window at native resolution; frames smaller than it are
    edge-padded at the bottom/right, as the ``tile`` contract pads them."""
    height, width = mask.shape
    pad_h, pad_w = max(0, side - height), max(0, side - width)
    if pad_h or pad_w:
        image = np.pad(image, [(0, pad_h), (0, pad_w)] + [(0, 0)] * (image.ndim - 2), mode="edge")
        mask = np.pad(mask, [(0, pad_h), (0, pad_w)], mode="edge")
        height, width = mask.shape
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    return image[top:top + side, left:left + side], mask[top:top + side, left:left + side]


def geometric(image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator,
              config: AugmentConfig, input_mode: str = "resize") -> tuple[np.ndarray, np.ndarray]:
    """One draw for both arrays: ``resize`` mode scale-crops the frame and resizes it to
    ``size`` (like the contract resizes whole frames); ``tile`` mode takes a native crop
    of ``size`` (times a ``tile_scale`` draw, then resized to ``size``). Then flips and
    90-degree rotations."""
    height, width = mask.shape
    if input_mode == "tile":
        side = max(1, round(size * rng.uniform(*config.tile_scale)))
        image, mask = _native_crop(image, mask, side, rng)
        if side != size:
            image, mask = resize_pair(image, mask, size)
    elif input_mode == "resize":
        if rng.random() < config.crop_p:
            fraction = rng.uniform(*config.crop_scale)
            crop_h, crop_w = max(1, round(height * fraction)), max(1, round(width * fraction))
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            image = image[top:top + crop_h, left:left + crop_w]
            mask = mask[top:top + crop_h, left:left + crop_w]
        image, mask = resize_pair(image, mask, size)
    else:
        raise ValueError(f"unknown input mode {input_mode!r}")
    if rng.random() < config.hflip_p:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < config.vflip_p:
        image, mask = image[::-1], mask[::-1]
    if config.rot90:
        turns = int(rng.integers(4))
        image, mask = np.rot90(image, turns), np.rot90(mask, turns)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def photometric(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Brightness, contrast, gamma, noise and blur on a uint8 image; returns a new array."""
    x = image.astype(np.float32) / 255.0
    contrast = rng.uniform(*config.contrast)
    x = (x - x.mean()) * contrast + x.mean() + rng.uniform(-config.brightness, config.brightness)
    x = np.clip(x, 0.0, 1.0) ** rng.uniform(*config.gamma)
    if rng.random() < config.noise_p:
        noise = rng.normal(0.0, rng.uniform(*config.noise_std), x.shape[:2]).astype(np.float32)
        x = x + (noise[:, :, None] if x.ndim == 3 else noise)  # same grain on every channel
    if rng.random() < config.blur_p:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(*config.blur_sigma))
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def augment_pair(image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator,
                 config: AugmentConfig, input_mode: str = "resize") -> tuple[np.ndarray, np.ndarray]:
    """uint8 image (HxW or HxWx3) and 0/255 mask -> augmented ``size`` x ``size`` pair."""
    image, mask = geometric(image, mask, size, rng, config, input_mode)
    return photometric(image, rng, config), mask
