"""Which ONNX (and so OpenVINO) nodes came from which modules of the model.

``export_onnx`` keeps module paths: the exporter records them in each node's
``pkg.torch.onnx.name_scopes`` metadata. Quantisation uses this map both ways: to keep the
layers of named modules float32 (``module_nodes``), and to name by module the convolutions
NNCF's accuracy control restored (``node_modules``). The exporter fuses each convolution with
the batch norm after it into one node that records only the batch norm's path;
``batch_norm_convolutions`` lets callers name the convolution.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from jaffnet.contract import INPUT_MULTIPLE


def node_scopes(onnx_path: str | Path) -> dict[str, list[str]]:
    """``{ONNX node name: its module paths}`` (from each node's ``pkg.torch.onnx.name_scopes``
    metadata, under ``ProbabilityMap.model``; the ``model.`` prefix is dropped)."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    scopes_of = {}
    for node in proto.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        if not scopes:
            continue
        try:
            scopes = ast.literal_eval(scopes)
        except (ValueError, SyntaxError):
            continue
        scopes_of[node.name] = [scope.removeprefix("model.") for scope in scopes if scope.startswith("model.")]
    return scopes_of


def batch_norm_convolutions(model: nn.Module) -> dict[str, str]:
    """``{batch-norm path: path of the Conv2d whose output it normalises}``, found by running
    the model once with hooks."""
    outputs: dict[int, tuple[str, torch.Tensor]] = {}  # id(output) -> (conv path, output kept alive)
    pairs: dict[str, str] = {}

    def conv_hook(name):
        return lambda module, inputs, output: outputs.__setitem__(id(output), (name, output))

    def norm_hook(name):
        def hook(module, inputs, output):
            source = outputs.get(id(inputs[0]))
            if source is not None and source[1] is inputs[0]:
                pairs[name] = source[0]
        return hook

    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(conv_hook(name)))
        elif isinstance(module, nn.BatchNorm2d):
            hooks.append(module.register_forward_hook(norm_hook(name)))
    training = model.training
    try:
        model.eval()
        parameter = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, model.in_channels, 2 * INPUT_MULTIPLE, 2 * INPUT_MULTIPLE,
                              dtype=parameter.dtype, device=parameter.device))
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return pairs


def node_modules(scopes_of: dict[str, list[str]], nodes: Sequence[str], fused: dict[str, str]) -> list[str]:
    """The module path of each OpenVINO/ONNX node in ``nodes`` (a convolution fused with its
    batch norm is named by the convolution)."""
    modules = set()
    for node in nodes:
        scopes = scopes_of.get(node.removesuffix("/WithoutBiases"))
        if scopes:
            modules.add(fused.get(scopes[-1], scopes[-1]))
    return sorted(modules)


def module_nodes(scopes_of: dict[str, list[str]], modules: Sequence[str], fused: dict[str, str],
                 onnx_path: str | Path) -> list[str]:
    """Names of the ONNX nodes exported from ``modules`` (``node_scopes``); a convolution
    fused with its batch norm (``fused``) is found under either's path."""
    if not modules:
        return []
    aliases = {m: [m] + [norm for norm, conv in fused.items() if conv == m or conv.startswith(m + ".")]
               for m in modules}
    nodes, found = [], set()
    for node, scopes in scopes_of.items():
        hits = {m for m, paths in aliases.items() for path in paths for scope in scopes
                if scope == path or scope.startswith(path + ".")}
        if hits:
            nodes.append(node)
            found |= hits
    missing = [m for m in modules if m not in found]
    if missing:
        raise ValueError(f"{onnx_path} records no layers of {missing}: pass an ONNX file written by export_onnx "
                         "(it keeps module names), or fewer fp32_modules")
    return nodes
