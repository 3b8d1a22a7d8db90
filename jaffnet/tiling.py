"""Frames of any size -> fixed-size tiles at native resolution, and back (the ``tile`` input mode).

A frame smaller than the tile is padded (edge replication, so no artificial step edge
appears); a larger one is cut into overlapping tiles whose probabilities are stitched
back by averaging (or max) where they overlap. Pure numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from jaffnet.contract import STITCH_MODES


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``[0, length)`` with tiles overlapping by at least ``overlap``.

    The tiles are spread evenly and the last one ends exactly at ``length``.
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


@dataclass(frozen=True)
class TileGrid:
    height: int  # the frame's own size
    width: int
    tile: int
    ys: tuple[int, ...]  # tile origins in the padded frame
    xs: tuple[int, ...]

    @classmethod
    def plan(cls, height: int, width: int, tile: int, overlap: int) -> TileGrid:
        if not 0 <= overlap < tile:
            raise ValueError(f"tile overlap must be in [0, {tile}), got {overlap}")
        padded_h, padded_w = max(height, tile), max(width, tile)
        return cls(height, width, tile, tuple(tile_starts(padded_h, tile, overlap)),
                   tuple(tile_starts(padded_w, tile, overlap)))

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    @property
    def padded_shape(self) -> tuple[int, int]:
        return max(self.height, self.tile), max(self.width, self.tile)

    def origins(self) -> list[tuple[int, int]]:
        return [(y, x) for y in self.ys for x in self.xs]

    def split(self, frame: np.ndarray) -> list[np.ndarray]:
        """HxWxC frame -> tiles of ``tile x tile x C`` (contiguous copies, row-major order)."""
        if frame.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame is {frame.shape[:2]}, the grid was planned for {(self.height, self.width)}")
        padded_h, padded_w = self.padded_shape
        pad = [(0, padded_h - self.height), (0, padded_w - self.width)] + [(0, 0)] * (frame.ndim - 2)
        padded = np.pad(frame, pad, mode="edge") if any(p[1] for p in pad[:2]) else frame
        size = self.tile
        return [np.ascontiguousarray(padded[y:y + size, x:x + size]) for y, x in self.origins()]

    def stitch(self, tiles: list[np.ndarray], mode: str = "mean") -> np.ndarray:
        """Per-tile maps (``tile x tile``) -> one HxW map, cropped to the frame's own size."""
        if mode not in STITCH_MODES:
            raise ValueError(f"stitch mode must be one of {STITCH_MODES}, got {mode!r}")
        if len(tiles) != len(self):
            raise ValueError(f"expected {len(self)} tiles, got {len(tiles)}")
        size = self.tile
        if mode == "max":
            out = np.zeros(self.padded_shape, dtype=np.float32)
            for (y, x), tile in zip(self.origins(), tiles):
                np.maximum(out[y:y + size, x:x + size], tile, out=out[y:y + size, x:x + size])
        else:
            out = np.zeros(self.padded_shape, dtype=np.float32)
            count = np.zeros(self.padded_shape, dtype=np.float32)
            for (y, x), tile in zip(self.origins(), tiles):
                out[y:y + size, x:x + size] += tile
                count[y:y + size, x:x + size] += 1
            out /= count
        return out[:self.height, :self.width]
