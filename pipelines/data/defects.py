"""Planted defects with exact pixel masks, one kind per frame.

The kinds follow the paper's datasets: thin curved scratches, small inclusions/spots,
low-contrast patches, branching cracks and small dark blowholes. Each painter draws
the binary mask first and then an intensity change confined to that mask, so the mask is
exactly the set of pixels the defect may alter. A :class:`Difficulty` then scales that
change: the default ``hard`` keeps a quarter of the defects faint, like the real data.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFECT_KINDS = ("scratch", "inclusion", "patch", "crack", "blowhole")
DEFECT_FREE = "none"


@dataclass
class Defect:
    mask: np.ndarray  # uint8 (H, W) in {0, 1}
    delta: float  # signed grey-level change at full strength


@dataclass(frozen=True)
class Difficulty:
    """How visible the planted defects are."""

    faint_fraction: float  # share of defects drawn at FAINT_SCALE of their contrast
    contrast_gain: float  # multiplies every defect's contrast

    def scale(self, rng: np.random.Generator) -> float:
        # Always one draw, whatever the settings: a seed gives the same masks at every difficulty.
        faint = rng.random() < self.faint_fraction
        return self.contrast_gain * (FAINT_SCALE if faint else 1.0)


FAINT_SCALE = 0.3
MIN_CONTRAST = 4.0  # grey levels: even a faint defect stays above 8-bit rounding
DIFFICULTIES = {
    "hard": Difficulty(faint_fraction=0.25, contrast_gain=1.0),
    # No faint defects and 1.5x contrast: what a small model at 64 px learns within
    # minutes on a CPU (``jaffnet demo``).
    "easy": Difficulty(faint_fraction=0.0, contrast_gain=1.5),
}


def _point(rng: np.random.Generator, size: int, margin: float = 0.1) -> np.ndarray:
    return rng.uniform(margin * size, (1 - margin) * size, 2)


def _contrast(rng: np.random.Generator, low: float, high: float, dark_bias: float) -> float:
    """A signed contrast, dark with probability ``dark_bias``."""
    magnitude = rng.uniform(low, high)
    return -magnitude if rng.random() < dark_bias else magnitude


def _polyline(mask: np.ndarray, points: np.ndarray, thickness: int) -> None:
    cv2.polylines(mask, [np.round(points).astype(np.int32)], False, 1, thickness, cv2.LINE_8)


def scratch(size: int, rng: np.random.Generator) -> Defect:
    """A thin curved line: a quadratic Bezier between two random points."""
    start, control, end = _point(rng, size), _point(rng, size, 0.0), _point(rng, size)
    t = np.linspace(0.0, 1.0, 48)[:, None]
    curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
    mask = np.zeros((size, size), np.uint8)
    _polyline(mask, curve, int(rng.integers(1, max(2, size // 96) + 1)))
    return Defect(mask, _contrast(rng, 20, 70, dark_bias=0.5))


def inclusion(size: int, rng: np.random.Generator) -> Defect:
    """One to three small spots."""
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        axes = rng.uniform(1.0, max(2.0, size / 14), 2)
        centre = _point(rng, size)
        cv2.ellipse(mask, tuple(np.round(centre).astype(int).tolist()),
                    tuple(np.round(axes).astype(int).tolist()), rng.uniform(0, 180), 0, 360, 1, -1)
    return Defect(mask, _contrast(rng, 25, 80, dark_bias=0.7))


def patch(size: int, rng: np.random.Generator) -> Defect:
    """A large irregular blob of low contrast: an ellipse with a noisy boundary."""
    radius = rng.uniform(size / 12, size / 3.2, 2)
    centre = _point(rng, size, 0.2)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    cos, sin = np.cos(angle), np.sin(angle)
    u = ((x - centre[0]) * cos + (y - centre[1]) * sin) / radius[0]
    v = (-(x - centre[0]) * sin + (y - centre[1]) * cos) / radius[1]
    wobble = cv2.resize(rng.standard_normal((6, 6)).astype(np.float32), (size, size),
                        interpolation=cv2.INTER_CUBIC)
    mask = (u * u + v * v + 0.3 * wobble < 1.0).astype(np.uint8)
    if not mask.any():  # the wobble can erase a small blob: keep at least its centre
        cx, cy = np.clip(np.round(centre).astype(int), 0, size - 1)
        mask[cy, cx] = 1
    return Defect(mask, _contrast(rng, 6, 25, dark_bias=0.5))


def crack(size: int, rng: np.random.Generator) -> Defect:
    """A jagged random walk that branches a few times."""
    mask = np.zeros((size, size), np.uint8)
    step = max(2.0, size / 40)
    stack = [(_point(rng, size, 0.2), rng.uniform(0, 2 * np.pi), int(rng.integers(8, 30)))]
    branches = 0
    while stack:
        position, heading, steps = stack.pop()
        points = [position]
        for _ in range(steps):
            heading += rng.normal(0.0, 0.35)
            position = position + step * np.array([np.cos(heading), np.sin(heading)])
            points.append(position)
            if branches < 3 and rng.random() < 0.06:
                branches += 1
                stack.append((position, heading + rng.choice([-1, 1]) * rng.uniform(0.4, 1.2),
                              int(rng.integers(4, 15))))
        _polyline(mask, np.array(points), int(rng.integers(1, max(2, size // 128) + 1)))
    return Defect(mask, -rng.uniform(30, 90))


def blowhole(size: int, rng: np.random.Generator) -> Defect:
    """One to four small, round, dark pits."""
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        centre = tuple(np.round(_point(rng, size)).astype(int).tolist())
        cv2.circle(mask, centre, int(rng.integers(1, max(2, size // 20) + 1)), 1, -1)
    return Defect(mask, -rng.uniform(40, 100))


_PAINTERS = {"scratch": scratch, "inclusion": inclusion, "patch": patch, "crack": crack,
             "blowhole": blowhole}


def draw_defect(kind: str, size: int, rng: np.random.Generator, difficulty: str = "hard") -> Defect:
    if kind not in _PAINTERS:
        raise ValueError(f"unknown defect kind {kind!r}; choose one of {DEFECT_KINDS}")
    scale = get_difficulty(difficulty).scale(rng)
    defect = _PAINTERS[kind](size, rng)
    magnitude = max(MIN_CONTRAST, abs(defect.delta) * scale)
    return Defect(defect.mask, float(np.copysign(magnitude, defect.delta)))


def get_difficulty(name: str) -> Difficulty:
    if name not in DIFFICULTIES:
        raise ValueError(f"unknown difficulty {name!r}; choose one of {tuple(DIFFICULTIES)}")
    return DIFFICULTIES[name]


def plant(background: np.ndarray, defect: Defect) -> np.ndarray:
    """Blend the defect into a float background; pixels outside the mask stay untouched.

    The strength ramps from half at the rim to full inside, a soft edge that never
    spills over the mask.
    """
    mask = defect.mask.astype(np.float32)
    softened = cv2.GaussianBlur(mask, (5, 5), 0)
    strength = mask * (0.5 + 0.5 * softened)
    return background + defect.delta * strength
