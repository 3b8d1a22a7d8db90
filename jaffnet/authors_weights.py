"""Weights saved by the authors' code -> ``JAFFNet``'s state_dict.

The authors' ``models/JAFFNet.py`` (github.com/yfhdm/yfhdm-JAFFNet) builds the same network
as ``JAFFNet()`` under other module names: ``inconv``, ``encoder1..5`` (torchvision
``resnet18.layer1..4`` plus a max-pool + two basic blocks), ``bridge.mrf1..3`` /
``bridge.conv4`` / ``bridge.pro`` (the DRF), ``jaff1..4`` (JAFF, deepest first),
``decoder5_g..decoder2_g`` and ``outconv6..2`` (bridge head first). Their decoder and MRF
branches are flat ``nn.Sequential(conv, bn, relu, conv, bn, relu)`` where ours are two
``ConvBnReLU``. Renaming is by module prefix (``_prefix_table``); everything below a
prefix (``weight``, ``bias``, BN ``running_mean`` / ``running_var`` /
``num_batches_tracked``, and whole torchvision basic blocks) keeps its name.

Pure torch: reading the file (weights-only) is ``jaffnet.io.read_state_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from jaffnet.io import WeightsError
from jaffnet.model import JAFFNet

AUTHORS_CODE = "https://github.com/yfhdm/yfhdm-JAFFNet (models/JAFFNet.py)"
# Their JAFFNet() takes no arguments: it is ours at the defaults.
AUTHORS_CONFIG: dict[str, Any] = {"encoder_depth": 18, "width": 1.0, "dilation_rates": [1, 2, 4]}

# Their nn.Sequential(conv, bn, relu, conv, bn, relu) -> our Sequential(ConvBnReLU, ConvBnReLU).
_TWO_CONV_BN_RELU = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1"}
# Their JAFFM -> our JointAttentionFusion.
_JAFF = {
    "conv_a.0": "channel_proj.0",
    "conv_b.0": "spatial_proj.0",
    "conv1.0": "avg_reduce.0",
    "conv2.0": "max_reduce.0",
    "conv3.0": "expand",
    "spatial_net": "spatial_net",  # conv (0), relu, conv (2), sigmoid: same indices
    "pro.0": "smooth",
    "alpha": "alpha",
}
_DRF_UNITS = 3  # their mrf1..mrf3
_MRF_BRANCHES = 3  # their conv1..conv3 (rates 1, 2, 4)
_DECODER_LEVELS = (5, 4, 3, 2)  # their decoder{level}_g and jaff{i + 1} -> our decoder.stages.{i}
_HEAD_LEVELS = (6, 5, 4, 3, 2)  # their outconv{level} -> our heads.convs.{i}


def _prefix_table() -> dict[str, str]:
    """Authors' module path -> ours."""
    table = {
        "inconv": "encoder.stem",
        **{f"encoder{n}": f"encoder.layer{n}" for n in range(1, 6)},  # identical block names below
        "bridge.conv4": "bridge.global_context.1",
        "bridge.pro": "bridge.out",
    }
    for unit in range(_DRF_UNITS):
        table[f"bridge.mrf{unit + 1}.pro"] = f"bridge.units.{unit}.fuse"
        for branch in range(_MRF_BRANCHES):
            for theirs, ours in _TWO_CONV_BN_RELU.items():
                branch_key = f"bridge.mrf{unit + 1}.conv{branch + 1}.{theirs}"
                table[branch_key] = f"bridge.units.{unit}.branches.{branch}.{ours}"
    for stage, level in enumerate(_DECODER_LEVELS):
        for theirs, ours in _JAFF.items():
            table[f"jaff{stage + 1}.{theirs}"] = f"decoder.stages.{stage}.jaff.{ours}"
        for theirs, ours in _TWO_CONV_BN_RELU.items():
            table[f"decoder{level}_g.{theirs}"] = f"decoder.stages.{stage}.convs.{ours}"
    for head, level in enumerate(_HEAD_LEVELS):
        table[f"outconv{level}"] = f"heads.convs.{head}"
    return table


PREFIXES = _prefix_table()
_INVERSE = {ours: theirs for theirs, ours in PREFIXES.items()}


class AuthorsWeightsError(WeightsError):
    """The state_dict does not fit: names its unknown and missing keys (authors' naming) and
    shape mismatches."""

    def __init__(self, message: str, unknown: list[str] = (), missing: list[str] = (), mismatched: list[str] = ()):
        super().__init__(message)
        self.unknown, self.missing, self.mismatched = list(unknown), list(missing), list(mismatched)


def _rename(key: str, table: Mapping[str, str]) -> str | None:
    """``key`` under the longest matching module prefix of ``table``, or None."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in table:
            return table[prefix] + key[len(prefix):]
    return None


def authors_key(our_key: str) -> str:
    """Our state_dict key in the authors' naming (``our_key`` itself if it has none)."""
    return _rename(our_key, _INVERSE) or our_key


def _strip_data_parallel(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A state_dict saved from ``nn.DataParallel`` prefixes every key with ``module.``."""
    if state_dict and all(key.startswith("module.") for key in state_dict):
        return {key[len("module."):]: value for key, value in state_dict.items()}
    return dict(state_dict)


def _listing(label: str, keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
    return f"{label}: {shown}"


def from_authors_state_dict(state_dict: Mapping[str, torch.Tensor],
                            config: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """The authors' state_dict renamed to ``JAFFNet(**config)``'s keys (same tensors).

    ``config`` defaults to the authors' model (``JAFFNet()``); another ``width`` is only for
    testing the mapping. Every parameter and buffer must be present, no other key, each with
    our shape, else ``AuthorsWeightsError`` naming them.
    """
    config = dict(AUTHORS_CONFIG if config is None else config)
    rates = list(config.get("dilation_rates", AUTHORS_CONFIG["dilation_rates"]))
    if rates != AUTHORS_CONFIG["dilation_rates"]:
        # Not visible in keys or shapes, so it must be checked here.
        raise AuthorsWeightsError(f"the authors' DRF branches use dilation rates {AUTHORS_CONFIG['dilation_rates']}, "
                                  f"not {rates}")
    with torch.device("meta"):  # keys and shapes only, no memory
        expected = {key: tuple(value.shape) for key, value in JAFFNet(**config).state_dict().items()}

    renamed: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in _strip_data_parallel(state_dict).items():
        ours = _rename(key, PREFIXES)
        if ours is None or ours not in expected:
            unknown.append(key)
        elif not isinstance(value, torch.Tensor):
            raise AuthorsWeightsError(f"{key} is a {type(value).__name__}, not a tensor", unknown=[key])
        else:
            renamed[ours] = value
    missing = sorted(authors_key(key) for key in expected.keys() - renamed.keys())
    mismatched = sorted(f"{authors_key(key)}: file {tuple(value.shape)} vs model {expected[key]}"
                        for key, value in renamed.items() if tuple(value.shape) != expected[key])
    unknown.sort()
    problems = [_listing(label, keys) for label, keys in (("unknown keys", unknown), ("missing keys", missing),
                                                          ("shape mismatches", mismatched)) if keys]
    if problems:
        raise AuthorsWeightsError(f"not a state_dict of the authors' JAFFNet ({AUTHORS_CODE}); " + "; ".join(problems),
                                  unknown=unknown, missing=missing, mismatched=mismatched)
    return renamed


def load_authors_weights(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any] | None = None) -> JAFFNet:
    """``JAFFNet(**config)`` (default: the authors' model) holding the authors' weights, in eval mode."""
    config = dict(AUTHORS_CONFIG if config is None else config)
    state = from_authors_state_dict(state_dict, config)
    model = JAFFNet(**config)
    model.load_state_dict(state, strict=True)
    return model.eval()
