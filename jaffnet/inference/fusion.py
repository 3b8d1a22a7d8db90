"""Fold eval-mode BatchNorm into the convolution before it.

At inference BatchNorm is a fixed per-channel affine map, so ``BN(conv(x))`` equals one
conv with rescaled weights and a shifted bias: the fold removes a full read and write
of every feature map. JAFFNet pairs a conv with its BN in two ways, both handled here:
adjacent children of an ``nn.Sequential`` (stem, ``ConvBnReLU``, downsample paths) and
the ``conv1/bn1``, ``conv2/bn2`` attributes of a ResNet ``BasicBlock``.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from jaffnet.layers.basic_block import BasicBlock

_BLOCK_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every conv -> BatchNorm pair merged into one conv.

    The input model is left untouched. Raises if any BatchNorm is left unfolded, so a
    new layer layout cannot silently lose the optimisation.
    """
    folded = copy.deepcopy(model).eval()
    _fold_children(folded)
    leftover = [name for name, module in folded.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if leftover:
        raise RuntimeError(f"BatchNorm layers not preceded by a conv, left unfolded: {', '.join(leftover)}")
    return folded


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and isinstance(bn, nn.BatchNorm2d)
        and bn.track_running_stats
        and conv.out_channels == bn.num_features
    )


def _fold_children(module: nn.Module) -> None:
    if isinstance(module, nn.Sequential):
        children = list(module.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if _foldable(conv, bn):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    elif isinstance(module, BasicBlock):
        for conv_name, bn_name in _BLOCK_PAIRS:
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            if _foldable(conv, bn):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    for child in module.children():
        _fold_children(child)
