"""JAFFNet's constructor arguments and the checks the model applies to them.

Torch-free, so a training config (``pipelines.training.config``) and a search space
(``tuning.search_space``) validate their model keys by these same rules without
importing torch. ``JAFFNet``, ``ResNetEncoder`` and the DRF bridge call them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}  # encoder_depth -> ResNet blocks per stage
MAX_WIDTH = 4.0


def check_encoder_depth(depth: Any) -> int:
    if isinstance(depth, bool) or depth not in BLOCKS_PER_STAGE:
        raise ValueError(f"encoder_depth must be one of {sorted(BLOCKS_PER_STAGE)}, got {depth!r}")
    return depth


def check_width(width: Any) -> float:
    """The channel multiplier: a number in (0, ``MAX_WIDTH``]."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= MAX_WIDTH:
        raise ValueError(f"width must be a number in (0, {MAX_WIDTH:g}], got {width!r}")
    return width


def validate_dilation_rates(rates: Sequence[int]) -> tuple[int, ...]:
    """Return the rates as a tuple of positive ints, or raise a ValueError saying why not."""
    if isinstance(rates, (str, bytes)) or not isinstance(rates, Sequence) or len(rates) == 0:
        raise ValueError(f"dilation_rates must be a non-empty sequence of positive ints, got {rates!r}")
    out = []
    for rate in rates:
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
            raise ValueError(f"dilation_rates must be positive ints, got {rates!r}")
        out.append(int(rate))
    return tuple(out)
