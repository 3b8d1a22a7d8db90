"""JAFFNet decoder: four stages, each fusing the upsampled decoder feature with its
JAFF-refined encoder skip."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from jaffnet.layers.conv_bn_relu import ConvBnReLU
from jaffnet.layers.jaff import JointAttentionFusion


def upsample2x(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class DecoderStage(nn.Module):
    def __init__(self, channels: int, mid_channels: int, out_channels: int):
        super().__init__()
        self.jaff = JointAttentionFusion(channels)
        self.convs = nn.Sequential(ConvBnReLU(2 * channels, mid_channels), ConvBnReLU(mid_channels, out_channels))

    def forward(self, upsampled: Tensor, skip: Tensor) -> Tensor:
        return self.convs(torch.cat([upsampled, self.jaff(upsampled, skip)], dim=1))


class JAFFDecoder(nn.Module):
    def __init__(self, skip_channels: Sequence[int], bridge_channels: int):
        """``skip_channels``: encoder channels at H/16, H/8, H/4, H/2 (deepest first)."""
        super().__init__()
        stages = []
        channels = [bridge_channels]
        for index, skip in enumerate(skip_channels):
            if skip != channels[-1]:
                raise ValueError(f"decoder stage {index}: skip has {skip} channels, upsampled feature {channels[-1]}")
            # The deepest stage keeps the width; the others halve it (512->512->256->128->64).
            out_channels = skip if index == 0 else max(1, skip // 2)
            stages.append(DecoderStage(skip, mid_channels=skip, out_channels=out_channels))
            channels.append(out_channels)
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(channels)

    def forward(self, bridge: Tensor, skips: Sequence[Tensor]) -> list[Tensor]:
        """Returns [upsampled bridge, stage outputs at H/16, H/8, H/4, H/2]."""
        x = upsample2x(bridge)
        outputs = [x]
        for index, (stage, skip) in enumerate(zip(self.stages, skips)):
            if index > 0:
                x = upsample2x(x)
            x = stage(x, skip)
            outputs.append(x)
        return outputs
