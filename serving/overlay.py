"""The overlay a person looks at: defect pixels tinted and every region boxed.

One drawing for ``jaffnet inspect --overlay-dir``, the decision log's overlay PNGs and
``jaffnet replay --overlay-dir``.
"""

from __future__ import annotations

import cv2
import numpy as np

RED_RGB = (255, 0, 0)
RED_BGR = (0, 0, 255)


def draw_overlay(image: np.ndarray, mask: np.ndarray | None, regions: list[dict],
                 colour: tuple[int, int, int] = RED_RGB, alpha: float = 0.5) -> np.ndarray:
    """A copy of the 3-channel uint8 ``image`` with ``mask`` pixels tinted by ``colour`` (in the
    image's channel order) and each region's ``bbox`` drawn."""
    out = image.copy()
    if mask is not None:
        out[mask] = ((1 - alpha) * out[mask] + alpha * np.array(colour)).astype(np.uint8)
    thickness = max(1, round(max(image.shape[:2]) / 400))  # still visible when a large frame is shown small
    for region in regions:
        box = region["bbox"]
        cv2.rectangle(out, (box["x"], box["y"]), (box["x"] + box["width"] - 1, box["y"] + box["height"] - 1),
                      colour, thickness)
    return out


def shrink_to(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """``image`` scaled down (area averaging) so its longer side is at most ``max_side``."""
    height, width = image.shape[:2]
    if not max_side or max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
