"""Conv -> BatchNorm -> ReLU, the unit most of the decoder and DRF are made of."""

from __future__ import annotations

from torch import nn


class ConvBnReLU(nn.Sequential):
    """``kernel_size`` conv with 'same' padding for the given dilation, then BN and ReLU.

    The conv keeps its bias (as in the authors' code, which counts towards the
    published 41,938,313 parameters) even though BN makes it redundant.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
