"""The input contract: what a model version expects of a frame, stored with its weights.

Training validation, threshold calibration, ``jaffnet evaluate`` and the Serve endpoint all
read the contract from the model's metadata and apply it through ``jaffnet.frames``, so
the metrics registered with a model describe exactly what the line gets.

Two scale policies (``mode``):

- ``resize`` (the paper's): the whole frame is resized to ``image_size`` x ``image_size``
  (aspect ratio is *not* kept: both sides are scaled independently, as in training) and
  the probability map is resized back to the frame's size. Right when frames are of the
  order of the training size and defects stay several pixels wide after resizing.
- ``tile``: the frame is never resized. It is cut into overlapping ``image_size`` tiles
  at native resolution (frames smaller than a tile are edge-padded) and the tiles'
  probabilities are stitched back (``stitch``: mean or max over overlaps). Training then
  samples native-resolution crops. Right for large frames (line scan, DAGM-size and up)
  where resizing would shrink a thin defect to nothing.

Either mode can average mirrored views (``flip_views``): the model sees each input as is
and mirrored (2: left-right; 4: also up-down and both; 8: also those four transposed, the
views training's flips and 90-degree turns show it), each map is mirrored back and the
maps are averaged before the frame's map is assembled. A defect stays a defect in a mirror
while a texture's chance hot spot seldom lines up in all views: on the 64-px demo models it
raised the image AUROC by 0.01-0.025 for 4x the inference work (docs/benchmarks/recipe.md).
The threshold is calibrated on the averaged maps, which is why the views are the model's
and not the caller's to choose.

Pure Python + numpy: Ray Data workers import it without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

INPUT_MULTIPLE = 32  # five 2x downsamplings between the input and the DRF bridge
INPUT_MODES = ("resize", "tile")
STITCH_MODES = ("mean", "max")
NORMALIZATIONS = ("imagenet", "authors")  # jaffnet.preprocess.normalize
FLIP_VIEWS = (1, 2, 4, 8)  # as is; + left-right mirror; + up-down and both; + the four transposed
CONTRACT_KEY = "input_contract"  # in a saved model's metadata
# Models saved before the contract existed were trained, validated, calibrated and
# evaluated on whole frames resized to their image_size: their registered metrics and
# threshold hold for ``resize``, so that is the policy they are served with.
LEGACY_MODE = "resize"


def check_image_size(value: Any, what: str = "image_size") -> int:
    """The model's input side: a positive int, a multiple of ``INPUT_MULTIPLE``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < INPUT_MULTIPLE or value % INPUT_MULTIPLE:
        raise ValueError(f"{what} must be a positive multiple of {INPUT_MULTIPLE}, got {value!r}")
    return value


def check_input_mode(value: Any, what: str = "input mode") -> str:
    if value not in INPUT_MODES:
        raise ValueError(f"{what} must be one of {INPUT_MODES}, got {value!r}")
    return value


def check_normalization(value: Any, what: str = "normalization") -> str:
    if value not in NORMALIZATIONS:
        raise ValueError(f"{what} must be one of {NORMALIZATIONS}, got {value!r}")
    return value


def check_tile_overlap(value: Any, what: str = "tile_overlap") -> float:
    """The fraction of a tile shared with its neighbour: a number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{what} must be in [0, 1), got {value!r}")
    return value


def check_flip_views(value: Any, what: str = "flip_views") -> int:
    if isinstance(value, bool) or value not in FLIP_VIEWS:
        raise ValueError(f"{what} must be one of {FLIP_VIEWS}, got {value!r}")
    return value


@dataclass(frozen=True)
class InputContract:
    image_size: int
    mode: str = "resize"
    channels: int = 3  # RGB; grayscale frames are replicated (jaffnet.preprocess.to_rgb)
    normalization: str = "imagenet"  # jaffnet.preprocess.normalize: "imagenet" or "authors" (their data_loader)
    tile_overlap: float = 0.25  # tile mode: fraction of a tile shared with its neighbour
    stitch: str = "mean"  # tile mode: how overlapping tiles combine
    flip_views: int = 1  # mirrored views averaged per input (FLIP_VIEWS); saved before it existed: 1

    def __post_init__(self) -> None:
        check_image_size(self.image_size)
        check_input_mode(self.mode)
        if self.channels != 3:
            raise ValueError(f"only 3-channel (RGB) input is supported, got channels={self.channels!r}")
        check_normalization(self.normalization)
        check_tile_overlap(self.tile_overlap)
        if self.stitch not in STITCH_MODES:
            raise ValueError(f"stitch must be one of {STITCH_MODES}, got {self.stitch!r}")
        check_flip_views(self.flip_views)

    @property
    def tile_overlap_px(self) -> int:
        return min(int(round(self.tile_overlap * self.image_size)), self.image_size - 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> InputContract:
        if not isinstance(values, dict):
            raise ValueError(f"an input contract is a mapping, got {type(values).__name__}")
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown input contract keys {unknown}")
        return cls(**values)

    def describe(self) -> str:
        views = f", mean of {self.flip_views} mirrored views" if self.flip_views > 1 else ""
        if self.mode == "resize":
            return f"resize whole frames to {self.image_size}x{self.image_size}{views}"
        return (f"native {self.image_size}px tiles, {self.tile_overlap_px}px overlap, "
                f"{self.stitch}-stitched{views}")


def contract_from_metadata(metadata: dict[str, Any], source: str = "the model") -> InputContract:
    """The contract a saved model carries; models saved before contracts get ``LEGACY_MODE``
    at their stored ``image_size``."""
    stored = metadata.get(CONTRACT_KEY)
    try:
        if stored is not None:
            return InputContract.from_dict(stored)
        return InputContract(image_size=check_image_size(metadata.get("image_size")), mode=LEGACY_MODE)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source} has no usable input contract in its metadata: {exc}") from exc


def contract_tags(contract: InputContract) -> dict[str, str]:
    """The contract as MLflow tags (``input_<key>``), so the registry UI shows it."""
    return {f"input_{key}": str(value) for key, value in contract.to_dict().items()}

