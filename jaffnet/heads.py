"""Side-output heads for deep supervision: a 3x3 conv to one logit map per decoder level,
bilinearly upsampled to the input size."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F


class SideOutputs(nn.Module):
    def __init__(self, in_channels: Sequence[int]):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c, 1, 3, padding=1) for c in in_channels)

    def forward(self, features: Sequence[Tensor], size: tuple[int, int]) -> list[Tensor]:
        return [_upsample(conv(feature), size) for conv, feature in zip(self.convs, features)]

    def finest(self, feature: Tensor, size: tuple[int, int]) -> Tensor:
        """Only the last (finest) head: the prediction."""
        return _upsample(self.convs[-1](feature), size)


def _upsample(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
