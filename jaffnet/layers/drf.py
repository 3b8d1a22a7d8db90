"""Dense Receptive Field (DRF) bridge: densely connected multi-receptive-field units.

Each MRF unit runs one [1x1 reduce -> 3x3 dilated] branch per dilation rate and fuses
them with a 1x1 conv; three units are chained with summed dense connections and a
global-context branch is added before the output conv. The dilation rates are a
constructor argument because Ray Tune searches them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from jaffnet.architecture import validate_dilation_rates
from jaffnet.layers.conv_bn_relu import ConvBnReLU


class MultiReceptiveField(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dilation_rates: Sequence[int]):
        super().__init__()
        rates = validate_dilation_rates(dilation_rates)
        inner = max(1, in_channels // 4)
        self.branches = nn.ModuleList(
            nn.Sequential(ConvBnReLU(in_channels, inner, 1), ConvBnReLU(inner, inner, 3, dilation=rate))
            for rate in rates
        )
        self.fuse = ConvBnReLU(inner * len(rates), out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))


class DenseReceptiveField(nn.Module):
    NUM_UNITS = 3

    def __init__(self, channels: int, dilation_rates: Sequence[int] = (1, 2, 4)):
        super().__init__()
        # Dense connections are sums, so every unit maps channels -> channels.
        self.units = nn.ModuleList(
            MultiReceptiveField(channels, channels, dilation_rates) for _ in range(self.NUM_UNITS)
        )
        self.global_context = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBnReLU(channels, channels, 1))
        self.out = ConvBnReLU(channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        dense = x
        for unit in self.units:
            dense = dense + unit(dense)
        # GAP gives a 1x1 map: upsampling it is a broadcast.
        context = F.interpolate(self.global_context(x), size=x.shape[-2:], mode="bilinear", align_corners=True)
        return self.out(dense + context)
