"""The image-level OK/NG decision: one rule, stored with the model, applied everywhere.

A frame's **image score** is its *smoothed max*: the largest value of the probability map
after a 3x3 box mean. A single hot pixel (sensor noise, a speck of dust) cannot reject a
part on its own, while a real defect, even a 1-2 px scratch, keeps a high smoothed peak
because its neighbours are high too; unlike "largest area above the pixel threshold" it
is continuous, so it has an AUROC and a threshold can be calibrated on it.

The frame is **NG** when ``image_score >= image_threshold`` and, if ``min_defect_area_px``
is set, its largest 8-connected region of pixels at or above ``pixel_threshold`` has at
least that many pixels. ``pixel_threshold`` also draws the mask and the regions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import cv2
import numpy as np

RULE_KEY = "decision_rule"  # in a saved model's metadata
IMAGE_SCORE = "smoothed_max_3x3"
_SMOOTHING = (3, 3)


def image_score(probability: np.ndarray) -> float:
    """The frame's smoothed max (see the module docstring)."""
    probability = np.asarray(probability, dtype=np.float32)
    smoothed = cv2.blur(probability, _SMOOTHING, borderType=cv2.BORDER_REPLICATE)
    return float(smoothed.max())


@dataclass(frozen=True)
class DecisionRule:
    pixel_threshold: float
    image_threshold: float
    min_defect_area_px: int = 0
    score: str = IMAGE_SCORE
    calibrated: bool = True  # False: a legacy model's rule, derived rather than calibrated

    def __post_init__(self) -> None:
        for name in ("pixel_threshold", "image_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        if isinstance(self.min_defect_area_px, bool) or not isinstance(self.min_defect_area_px, int) \
                or self.min_defect_area_px < 0:
            raise ValueError(f"min_defect_area_px must be an int >= 0, got {self.min_defect_area_px!r}")
        if self.score != IMAGE_SCORE:
            raise ValueError(f"unknown image score {self.score!r}; this version computes {IMAGE_SCORE!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DecisionRule:
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown decision rule keys {unknown}")
        return cls(**values)

    def with_overrides(self, pixel_threshold: float | None = None,
                       image_threshold: float | None = None) -> DecisionRule:
        changes = {key: value for key, value in (("pixel_threshold", pixel_threshold),
                                                  ("image_threshold", image_threshold)) if value is not None}
        return replace(self, **changes) if changes else self

    def is_ng(self, score: float, largest_region_px: int) -> bool:
        return score >= self.image_threshold and largest_region_px >= self.min_defect_area_px

    def explain(self, score: float, largest_region_px: int) -> str:
        """Which comparison decided, in words a quality engineer can check."""
        if score < self.image_threshold:
            return f"image_score {score:.4f} < image_threshold {self.image_threshold:.4f}: OK"
        if largest_region_px < self.min_defect_area_px:
            return (f"largest region {largest_region_px} px < min_defect_area_px {self.min_defect_area_px}: OK "
                    f"(image_score {score:.4f} >= {self.image_threshold:.4f})")
        area = f", largest region {largest_region_px} px >= {self.min_defect_area_px}" if self.min_defect_area_px else ""
        return f"image_score {score:.4f} >= image_threshold {self.image_threshold:.4f}{area}: NG"


def rule_from_metadata(metadata: dict[str, Any], source: str = "the model") -> DecisionRule:
    """The rule a saved model carries. A model saved before image-level rules has only its
    pixel threshold: its image threshold is set to the same value (close to the old "any
    pixel at or above the threshold" rule) and marked uncalibrated."""
    try:
        stored = metadata.get(RULE_KEY)
        if stored is not None:
            return DecisionRule.from_dict(stored)
        threshold = float(metadata.get("threshold", 0.5))
        return DecisionRule(pixel_threshold=threshold, image_threshold=threshold, calibrated=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source} has no usable decision rule in its metadata: {exc}") from exc


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
    reason: str  # the comparison that decided (DecisionRule.explain)
    image_score: float
    defect_score: float  # the highest pixel probability in the frame
    rule: DecisionRule
    defect_area_px: int  # pixels at or above the pixel threshold
    defect_area_ratio: float
    largest_region_px: int
    region_count: int
    regions: list[Region] = field(default_factory=list)  # largest first, at most max_regions
    mask: np.ndarray | None = None  # HxW bool, pixels at or above the pixel threshold


def find_regions(mask: np.ndarray, probability: np.ndarray, max_regions: int) -> tuple[int, int, list[Region]]:
    """8-connected components of ``mask``: (how many, the largest's area, the ``max_regions`` largest)."""
    if not mask.any():
        return 0, 0, []
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = (np.argsort(-areas, kind="stable")[:max_regions] + 1).tolist()
    regions = []
    for label in order:
        x, y, w, h, area = (int(v) for v in stats[label])
        window = labels[y:y + h, x:x + w] == label
        peak = float(probability[y:y + h, x:x + w][window].max())
        regions.append(Region(x, y, w, h, area, peak))
    return count - 1, int(areas.max()), regions


def judge(probability: np.ndarray, rule: DecisionRule, max_regions: int = 100) -> Verdict:
    """Apply ``rule`` to one frame's probability map (at the frame's own size)."""
    probability = np.asarray(probability, dtype=np.float32)
    mask = probability >= rule.pixel_threshold
    count, largest, regions = find_regions(mask, probability, max_regions)
    score = image_score(probability)
    area = int(mask.sum())
    return Verdict(
        decision="NG" if rule.is_ng(score, largest) else "OK",
        reason=rule.explain(score, largest),
        image_score=score,
        defect_score=float(probability.max()),
        rule=rule,
        defect_area_px=area,
        defect_area_ratio=area / mask.size,
        largest_region_px=largest,
        region_count=count,
        regions=regions,
        mask=mask,
    )
