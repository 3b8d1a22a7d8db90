"""Joint Attention-guided Feature Fusion (JAFF).

The high-level decoder feature ``x`` yields a channel attention (CBAM-style avg/max
paths) and a spatial attention (channel mean/max -> dilated convs); their outer product,
smoothed by a dilated depthwise conv, re-weights the low-level encoder skip ``y``.
The residual gate ``alpha`` starts at 0, so the module is an identity on ``y`` at
initialisation and learns how much attention to apply.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class JointAttentionFusion(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.channel_proj = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.ReLU(inplace=True))
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.avg_reduce = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(inplace=True))
        self.max_reduce = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(inplace=True))
        self.expand = nn.Conv2d(hidden, channels, 1, bias=False)  # shared by both paths

        self.spatial_proj = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.ReLU(inplace=True))
        self.spatial_net = nn.Sequential(
            nn.Conv2d(2, 64, 3, padding=2, dilation=2, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 1, 3, padding=4, dilation=4, bias=False),
        )
        self.smooth = nn.Conv2d(channels, channels, 3, padding=2, dilation=2, groups=channels, bias=False)
        self.alpha = nn.Parameter(torch.zeros(1))

    def channel_attention(self, x: Tensor) -> Tensor:
        a = self.channel_proj(x)
        logits = self.expand(self.avg_reduce(self.avg_pool(a))) + self.expand(self.max_reduce(self.max_pool(a)))
        return torch.sigmoid(logits)  # (N, C, 1, 1)

    def spatial_attention(self, x: Tensor) -> Tensor:
        b = self.spatial_proj(x)
        pooled = torch.cat([b.mean(dim=1, keepdim=True), b.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial_net(pooled))  # (N, 1, H, W)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        joint = self.smooth(self.channel_attention(x) * self.spatial_attention(x))  # outer product by broadcast
        return self.alpha * (y * joint) + y
