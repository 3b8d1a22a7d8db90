"""Probability map -> the inspection verdict: decision, score, area, regions, mask PNG."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass(frozen=True)
class Region:
    x: int
    y: int
    width: int
    height: int
    area_px: int
    max_probability: float

    def to_dict(self) -> dict:
        return {
            "bbox": {"x": self.x, "y": self.y, "width": self.width, "height": self.height},
            "area_px": self.area_px,
            "max_probability": round(self.max_probability, 6),
        }


@dataclass
class Verdict:
    decision: str  # "OK" or "NG"
    defect_score: float  # the highest probability in the frame
    threshold: float
    defect_area_px: int
    defect_area_ratio: float
    region_count: int
    regions: list[Region] = field(default_factory=list)  # largest first, at most max_regions
    mask: np.ndarray | None = None  # HxW bool, pixels at or above the threshold


def find_regions(mask: np.ndarray, probability: np.ndarray, max_regions: int) -> tuple[int, list[Region]]:
    """8-connected components of ``mask``: (how many, the ``max_regions`` largest)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    order = sorted(range(1, count), key=lambda i: -stats[i, cv2.CC_STAT_AREA])[:max_regions]
    regions = []
    for label in order:
        x, y, w, h, area = (int(v) for v in stats[label])
        window = labels[y:y + h, x:x + w] == label
        peak = float(probability[y:y + h, x:x + w][window].max())
        regions.append(Region(x, y, w, h, area, peak))
    return count - 1, regions


def judge(probability: np.ndarray, threshold: float, max_regions: int = 100) -> Verdict:
    """A frame is NG when any pixel's defect probability reaches the threshold."""
    mask = probability >= threshold
    area = int(mask.sum())
    count, regions = find_regions(mask, probability, max_regions) if area else (0, [])
    return Verdict(
        decision="NG" if area else "OK",
        defect_score=float(probability.max()),
        threshold=float(threshold),
        defect_area_px=area,
        defect_area_ratio=area / mask.size,
        region_count=count,
        regions=regions,
        mask=mask,
    )


def mask_to_png_base64(mask: np.ndarray) -> str:
    """HxW bool -> base64 of a single-channel 8-bit PNG (defect 255, background 0)."""
    ok, encoded = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    if not ok:  # pragma: no cover - encoding a uint8 2-D array does not fail
        raise RuntimeError("PNG encoding of the mask failed")
    return base64.b64encode(encoded.tobytes()).decode("ascii")


def png_base64_to_mask(text: str) -> np.ndarray:
    """The inverse of ``mask_to_png_base64``, for clients."""
    image = cv2.imdecode(np.frombuffer(base64.b64decode(text), dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError("the mask is not a base64 PNG")
    return image > 127
