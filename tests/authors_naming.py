"""Our JAFFNet state_dict keys -> the authors' naming (github.com/yfhdm/yfhdm-JAFFNet,
models/JAFFNet.py), written out from their module names independently of
``jaffnet.authors_weights``, so tests of that mapping are not circular.

Theirs: ``inconv`` (conv, bn, relu); ``encoder1..4`` = torchvision resnet18 ``layer1..4``;
``encoder5`` = (max-pool, BasicBlock, BasicBlock); ``bridge`` = DRF with ``mrf1..3`` (each
``conv1..3`` = Sequential(conv, bn, relu, conv, bn, relu) and ``pro`` = (conv, bn, relu)),
``conv4`` = (conv, bn, relu) on the pooled input, ``pro`` = (conv, bn, relu); ``jaff1..4``
(JAFFM: ``conv_a``, ``conv_b``, ``conv1``, ``conv2``, ``conv3`` each Sequential(conv, ...),
``spatial_net`` (conv, relu, conv, sigmoid), ``pro`` = Sequential(depthwise conv), ``alpha``),
used deepest first; ``decoder5_g..decoder2_g`` = Sequential(conv, bn, relu, conv, bn, relu);
``outconv6`` (on the upsampled bridge), ``outconv5..2``.
"""

from __future__ import annotations

import re

_JAFF_NAMES = {"channel_proj.0": "conv_a.0", "spatial_proj.0": "conv_b.0", "avg_reduce.0": "conv1.0",
               "max_reduce.0": "conv2.0", "expand": "conv3.0", "spatial_net.0": "spatial_net.0",
               "spatial_net.2": "spatial_net.2", "smooth": "pro.0", "alpha": "alpha"}


def _jaff(m: re.Match) -> str:
    module, _, leaf = m[2].rpartition(".") if m[2] != "alpha" else ("alpha", "", "")
    return f"jaff{int(m[1]) + 1}.{_JAFF_NAMES[module]}" + (f".{leaf}" if leaf else "")


_RULES = [
    (r"^encoder\.stem\.(\d)\.", lambda m: f"inconv.{m[1]}."),
    (r"^encoder\.layer(\d)\.", lambda m: f"encoder{m[1]}."),
    # our branch = (ConvBnReLU, ConvBnReLU); theirs one flat Sequential: index 3 * unit + layer
    (r"^bridge\.units\.(\d)\.branches\.(\d)\.(\d)\.(\d)\.",
     lambda m: f"bridge.mrf{int(m[1]) + 1}.conv{int(m[2]) + 1}.{3 * int(m[3]) + int(m[4])}."),
    (r"^bridge\.units\.(\d)\.fuse\.(\d)\.", lambda m: f"bridge.mrf{int(m[1]) + 1}.pro.{m[2]}."),
    (r"^bridge\.global_context\.1\.(\d)\.", lambda m: f"bridge.conv4.{m[1]}."),
    (r"^bridge\.out\.(\d)\.", lambda m: f"bridge.pro.{m[1]}."),
    (r"^decoder\.stages\.(\d)\.convs\.(\d)\.(\d)\.",
     lambda m: f"decoder{5 - int(m[1])}_g.{3 * int(m[2]) + int(m[3])}."),
    (r"^decoder\.stages\.(\d)\.jaff\.(.+)$", _jaff),
    (r"^heads\.convs\.(\d)\.", lambda m: f"outconv{6 - int(m[1])}."),
]


def authors_name(key: str) -> str:
    for pattern, replacement in _RULES:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    raise KeyError(f"no authors' name for {key}")


def to_authors_naming(state_dict: dict) -> dict:
    return {authors_name(key): value for key, value in state_dict.items()}


def randomize(model):
    """Distinct values everywhere (BN statistics, the JAFF gates), scaled so the signal
    survives the depth, so a wrong mapping shows in the outputs."""
    import torch

    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(3)
            elif name.endswith(("running_var", "alpha")) or (tensor.dim() == 1 and name.endswith("weight")):
                tensor.uniform_(0.5, 1.5)  # BN variances and scales, JAFF gates
            elif tensor.dim() > 1:  # conv weights, He-scaled
                tensor.normal_(0.0, (2.0 / tensor[0].numel()) ** 0.5)
            else:  # biases, running means
                tensor.normal_(0.0, 0.1)
    return model.eval()
