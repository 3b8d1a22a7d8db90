"""JAFFNet's ResNet encoder.

Unlike torchvision's ResNet the stem is a stride-1 3x3 conv with no max-pool, so the
four ResNet stages run at H, H/2, H/4, H/8 and keep fine detail for thin defects.
A fifth stage (2x2 max-pool + two basic blocks) runs at H/16. ``layer1``..``layer4``
are named as in torchvision so its state_dicts load directly.
"""

from __future__ import annotations

from torch import Tensor, nn

from jaffnet.architecture import BLOCKS_PER_STAGE, check_encoder_depth
from jaffnet.layers.basic_block import BasicBlock, make_stage

BASE_CHANNELS = (64, 64, 128, 256, 512)  # stem, layer1..layer4; layer5 keeps 512


def scale_channels(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class ResNetEncoder(nn.Module):
    def __init__(self, depth: int = 18, width: float = 1.0):
        super().__init__()
        check_encoder_depth(depth)
        stem, c1, c2, c3, c4 = (scale_channels(c, width) for c in BASE_CHANNELS)
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem, 3, padding=1),  # RGB input
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        )
        n1, n2, n3, n4 = BLOCKS_PER_STAGE[depth]
        self.layer1 = make_stage(stem, c1, n1, stride=1)
        self.layer2 = make_stage(c1, c2, n2, stride=2)
        self.layer3 = make_stage(c2, c3, n3, stride=2)
        self.layer4 = make_stage(c3, c4, n4, stride=2)
        self.layer5 = nn.Sequential(nn.MaxPool2d(2, 2, ceil_mode=True), BasicBlock(c4, c4), BasicBlock(c4, c4))
        self.out_channels = (c1, c2, c3, c4, c4)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Features at strides 1, 2, 4, 8, 16."""
        features = []
        x = self.stem(x)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4, self.layer5):
            x = stage(x)
            features.append(x)
        return features
