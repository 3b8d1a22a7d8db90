"""Background surfaces for the synthetic defect dataset.

Half of the backgrounds are real surface photographs that ship inside scikit-image
(brick, grass, gravel) seen through a random crop, rotation, rescale and contrast shift;
the other half are procedural textures (brushed metal, woven fabric, multi-scale noise),
so a model trained on them does not just memorise three photographs.
All functions return float32 grayscale ``(size, size)`` arrays in roughly [0, 255].
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

PHOTO_TEXTURES = ("brick", "grass", "gravel")
PROCEDURAL_TEXTURES = ("brushed_metal", "fabric", "noise")
TEXTURES = PHOTO_TEXTURES + PROCEDURAL_TEXTURES


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data  # bundled files: no network access

    image = getattr(skimage.data, name)()
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return image.astype(np.float32)


def load_photos() -> None:
    for name in PHOTO_TEXTURES:
        _photo(name)


def _contrast_shift(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mean = float(image.mean())
    gain = rng.uniform(0.5, 1.3)
    target_mean = rng.uniform(70.0, 190.0)
    return (image - mean) * gain + target_mean


def photo_texture(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random rotated, rescaled view of a bundled photograph."""
    photo = _photo(name)
    height, width = photo.shape
    crop = rng.uniform(0.25, 1.0) * min(height, width)  # photo pixels the view spans
    scale = size / crop
    centre = (rng.uniform(0, width), rng.uniform(0, height))
    matrix = cv2.getRotationMatrix2D(centre, rng.uniform(0, 360), scale)
    matrix[:, 2] += np.array([size / 2, size / 2]) - np.array(centre)  # centre -> view centre
    view = cv2.warpAffine(photo, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)
    return _contrast_shift(view, rng)


def _rotated_coordinates(size: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return x * cos + y * sin, -x * sin + y * cos


def _smooth_noise(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with about ``cells`` features across the frame, zero mean, unit-ish spread."""
    cells = max(2, cells)
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def _illumination(size: int, rng: np.random.Generator) -> np.ndarray:
    """A gentle linear light gradient, as on a real line-scan camera."""
    u, _ = _rotated_coordinates(size, rng.uniform(0, 2 * np.pi))
    return (u / size) * rng.uniform(-30.0, 30.0)


def brushed_metal(size: int, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal((size, size)).astype(np.float32)
    streak = max(3, int(size * rng.uniform(0.1, 0.4)))
    streaks = cv2.blur(noise, (streak, 1)) * np.sqrt(streak)  # long along one axis
    if rng.random() < 0.5:
        streaks = streaks.T
    base = rng.uniform(90.0, 200.0)
    return base + streaks * rng.uniform(4.0, 12.0) + _illumination(size, rng)


def fabric(size: int, rng: np.random.Generator) -> np.ndarray:
    period = rng.uniform(4.0, 12.0)
    u, v = _rotated_coordinates(size, rng.uniform(0, np.pi))
    weave = np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / period)
    threads = rng.standard_normal((size, size)).astype(np.float32) * rng.uniform(2.0, 8.0)
    base = rng.uniform(70.0, 190.0)
    return base + weave * rng.uniform(10.0, 35.0) + threads + _illumination(size, rng)


def noise(size: int, rng: np.random.Generator) -> np.ndarray:
    layers = sum(_smooth_noise(size, size // octave, rng) * amplitude
                 for octave, amplitude in ((32, 20.0), (8, 10.0), (2, 5.0)))
    base = rng.uniform(70.0, 190.0)
    return base + layers * rng.uniform(0.5, 1.5) + _illumination(size, rng)


_PROCEDURAL = {"brushed_metal": brushed_metal, "fabric": fabric, "noise": noise}


def render_texture(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    if name in PHOTO_TEXTURES:
        return photo_texture(name, size, rng)
    if name in _PROCEDURAL:
        return _PROCEDURAL[name](size, rng).astype(np.float32)
    raise ValueError(f"unknown texture {name!r}; choose one of {TEXTURES}")
