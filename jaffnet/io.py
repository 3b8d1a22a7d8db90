"""Saving and loading JAFFNet without unpickling anything.

A saved model is a directory with ``config.json`` (the constructor arguments plus free
metadata such as the calibrated threshold) and ``model.safetensors`` (the weights).
Encoder initialisation reads a local torchvision-format ResNet state_dict; nothing is
ever downloaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from jaffnet.digests import file_sha256
from jaffnet.model import JAFFNet

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


class WeightsError(ValueError):
    """A weights file that cannot be used: unreadable, or keys/shapes that do not fit."""


def save_pretrained(model: JAFFNet, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    config = {"format_version": FORMAT_VERSION, "model": model.config, "metadata": metadata or {}}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a saved JAFFNet directory")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise WeightsError(f"{path} has no 'model' section")
    return config


def load_pretrained(directory: str | Path, map_location: str | torch.device = "cpu") -> JAFFNet:
    """Rebuild the model from its config and load its weights; returned in eval mode."""
    directory = Path(directory)
    config = read_config(directory)
    arguments = dict(config["model"])
    # Saved before 1-channel input was dropped: every such model has in_channels 3.
    if arguments.pop("in_channels", 3) != 3:
        raise WeightsError(f"{directory / CONFIG_FILE}: a 1-channel model; only RGB (3-channel) models are supported")
    try:
        model = JAFFNet(**arguments)
    except TypeError as exc:
        raise WeightsError(f"{directory / CONFIG_FILE}: unknown model argument ({exc})") from exc
    state = _read_safetensors(directory / WEIGHTS_FILE)
    load_state_strict(model, state, source=directory / WEIGHTS_FILE)
    return model.to(map_location).eval()


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path | str) -> None:
    """load_state_dict that names every missing, unexpected and mis-shaped key."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(expected) & set(state)
        if state[key].shape != expected[key].shape
    )
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if keys:
            shown = ", ".join(keys[:10]) + (f", ... ({len(keys)} in all)" if len(keys) > 10 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise WeightsError(f"{source} does not fit the model; " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path} is not a readable safetensors file: {exc}") from exc


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from ``.safetensors`` or a torch file loaded with ``weights_only=True``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise WeightsError(f"{path} is not a loadable weights-only torch file: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    return state


# torchvision ResNet keys that JAFFNet does not use: its 7x7 stem and classifier.
_UNUSED_TORCHVISION_PREFIXES = ("conv1.", "bn1.", "fc.")
_ENCODER_STAGES = ("layer1.", "layer2.", "layer3.", "layer4.")


def read_encoder_weights(weights: str | Path, depth: int) -> tuple[dict[str, torch.Tensor], Path, dict[str, str]]:
    """The encoder state dict named by ``weights`` (``"imagenet"``: torchvision's file for a
    ResNet-``depth`` through torch's hub cache, see ``jaffnet.encoders.pretrained``; else a
    local torchvision ResNet state_dict file), the file it came from, and the provenance to
    record (``encoder_weights``: the file's name, ``encoder_weights_sha256``)."""
    from jaffnet.encoders.pretrained import IMAGENET, fetch_imagenet_state

    if str(weights) == IMAGENET:
        state, file = fetch_imagenet_state(depth)
        return state, file.path, {"encoder_weights": f"{IMAGENET}:{file.name}", "encoder_weights_sha256": file.sha256}
    source = Path(weights)
    return read_state_dict(source), source, {"encoder_weights": source.name,
                                             "encoder_weights_sha256": file_sha256(source)}


def load_encoder_weights(model: JAFFNet, weights: str | Path) -> dict[str, str]:
    """Initialise ``layer1``..``layer4`` from ``weights`` (see :func:`read_encoder_weights`);
    returns the provenance to record.

    The stride-1 3x3 stem and the extra fifth stage have no torchvision counterpart and
    keep their random initialisation.
    """
    if str(weights) == "imagenet" and model.config["width"] != 1.0:  # checked before any download
        raise WeightsError(f"ImageNet ResNet weights fit the full-width encoder (width 1.0), not width "
                           f"{model.config['width']}")
    state, source, provenance = read_encoder_weights(weights, model.config["encoder_depth"])
    stage_state = {k: v for k, v in state.items() if k.startswith(_ENCODER_STAGES)}
    foreign = sorted(k for k in state if not k.startswith(_ENCODER_STAGES + _UNUSED_TORCHVISION_PREFIXES))
    if not stage_state or foreign:
        shown = ", ".join(foreign[:10]) or "no layer1..layer4 keys"
        raise WeightsError(f"{source} is not a torchvision ResNet state_dict ({shown})")
    stages = torch.nn.ModuleDict({name.rstrip("."): getattr(model.encoder, name.rstrip(".")) for name in _ENCODER_STAGES})
    load_state_strict(stages, stage_state, source=source)
    return provenance


def weights_sha256(model: torch.nn.Module) -> str:
    """Hex SHA-256 of a model's weights (every tensor of its state dict: name, dtype, shape,
    bytes, in order): equal for the same weights however they were saved or loaded."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
