"""JAFFNet: wiring of encoder, DRF bridge, JAFF decoder and side-output heads.

The constructor arguments are the whole config (``model.config``); ``jaffnet.io`` saves
them as JSON beside the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from jaffnet.architecture import check_width, validate_dilation_rates
from jaffnet.contract import INPUT_MULTIPLE
from jaffnet.decoders import JAFFDecoder
from jaffnet.encoders import ResNetEncoder
from jaffnet.heads import SideOutputs
from jaffnet.layers.drf import DenseReceptiveField


# RGB, normalised as the input contract says (jaffnet.preprocess); grayscale frames are replicated first.
IN_CHANNELS = 3

class JAFFNet(nn.Module):
    """Joint Attention-guided Feature Fusion Network (Jiang et al., arXiv 2402.02797).

    ``JAFFNet()`` is the faithful full-size model (ResNet-18, width 1.0, 41,938,313
    parameters). ``width`` scales the channel counts of the encoder, the DRF bridge and
    the decoder, for cheap CPU runs; JAFF's spatial-attention branch keeps its fixed
    2 -> 64 -> 1 convolutions at every width (so parameter counts do not scale as width²).

    ``forward`` returns logits. With ``side_outputs`` True (the default in training
    mode) it returns the five side outputs, prediction first:
    ``(H/2 stage, H/4, H/8, H/16, bridge)``, all at the input size; otherwise (the
    default in eval mode) only the prediction, shape ``(N, 1, H, W)``.
    """

    def __init__(
        self,
        encoder_depth: int = 18,
        width: float = 1.0,
        dilation_rates: Sequence[int] = (1, 2, 4),
    ):
        super().__init__()
        check_width(width)
        dilation_rates = validate_dilation_rates(dilation_rates)
        self.config: dict[str, Any] = {
            "encoder_depth": int(encoder_depth),
            "width": float(width),
            "dilation_rates": list(dilation_rates),
        }
        self.encoder = ResNetEncoder(encoder_depth, width)
        _, c2, c3, c4, c5 = self.encoder.out_channels
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.bridge = DenseReceptiveField(c5, dilation_rates)
        self.decoder = JAFFDecoder(skip_channels=(c5, c4, c3, c2), bridge_channels=c5)
        self.heads = SideOutputs(self.decoder.out_channels)

    @property
    def in_channels(self) -> int:
        return IN_CHANNELS

    def _check_input(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected a (N, C, H, W) tensor, got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if height % INPUT_MULTIPLE or width % INPUT_MULTIPLE:
            raise ValueError(
                f"input height and width must be multiples of {INPUT_MULTIPLE}, got {height}x{width}; "
                "resize or pad the image first"
            )
        if x.shape[1] != IN_CHANNELS:
            raise ValueError(f"model takes {IN_CHANNELS}-channel input, got {x.shape[1]} channels; grayscale "
                             "frames become RGB in jaffnet.preprocess (to_rgb), before normalisation")
        return x

    def forward(self, x: Tensor, side_outputs: bool | None = None) -> Tensor | tuple[Tensor, ...]:
        x = self._check_input(x)
        size = (x.shape[-2], x.shape[-1])
        features = self.encoder(x)
        bridge = self.bridge(self.pool(features[-1]))
        decoded = self.decoder(bridge, features[:0:-1])  # skips at H/16, H/8, H/4, H/2
        if side_outputs is None:
            side_outputs = self.training
        if not side_outputs:
            return self.heads.finest(decoded[-1], size)  # skip the four unused heads
        return tuple(reversed(self.heads(decoded, size)))
