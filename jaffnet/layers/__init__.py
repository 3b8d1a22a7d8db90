"""Building blocks of JAFFNet, one concept per module."""

from jaffnet.layers.basic_block import BasicBlock
from jaffnet.layers.conv_bn_relu import ConvBnReLU
from jaffnet.layers.drf import DenseReceptiveField, MultiReceptiveField
from jaffnet.layers.jaff import JointAttentionFusion

__all__ = [
    "BasicBlock",
    "ConvBnReLU",
    "DenseReceptiveField",
    "JointAttentionFusion",
    "MultiReceptiveField",
]
