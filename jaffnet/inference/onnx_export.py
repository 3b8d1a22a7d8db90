"""Export JAFFNet to ONNX with the torch.export-based exporter (``dynamo=True``).

The legacy TorchScript exporter is deprecated since torch 2.9; the dynamo exporter needs
``onnxscript``. The file maps a float32 ``image`` ``(N, C, H, W)`` to ``probability``
``(N, H, W)`` (the sigmoid is part of the graph), with batch, height and width dynamic
(height and width stay multiples of 32). The model config is stored in the file's
metadata so a reader can tell which network it holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from jaffnet.contract import INPUT_MULTIPLE, check_image_size
from jaffnet.inference.probability import ProbabilityMap
from jaffnet.model import IN_CHANNELS

INPUT_NAME = "image"
OUTPUT_NAME = "probability"
MAX_SIDE = 8192  # upper bound the exporter needs for the dynamic height/width


def export_onnx(model: torch.nn.Module, path: str | Path, image_size: int = 256, dynamic: bool = True,
                metadata: dict | None = None) -> Path:
    """Write ``model`` (eval mode, on CPU) as an ONNX file at ``path``; returns the path.

    ``image_size`` is the example input's side; with ``dynamic`` False the file only
    accepts batch 1 at that size.
    """
    import onnx

    check_image_size(image_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = getattr(model, "config", {})
    wrapped = ProbabilityMap(_cpu_eval_copy(model)).eval()
    example = torch.zeros(2 if dynamic else 1, IN_CHANNELS, image_size, image_size)
    dynamic_shapes = None
    if dynamic:
        batch = torch.export.Dim("batch", min=1, max=4096)
        # Five 2x poolings: the exporter must know height and width are multiples of 32.
        height = torch.export.Dim("height_blocks", min=1, max=MAX_SIDE // INPUT_MULTIPLE)
        width = torch.export.Dim("width_blocks", min=1, max=MAX_SIDE // INPUT_MULTIPLE)
        dynamic_shapes = {"image": {0: batch, 2: INPUT_MULTIPLE * height, 3: INPUT_MULTIPLE * width}}
    with _quiet_exporter():
        program = torch.onnx.export(
            wrapped, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic_shapes, verbose=False,
        )
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {
        "jaffnet_config": json.dumps(config, sort_keys=True),
        "jaffnet_weights_sha256": weights_fingerprint(model),
        "jaffnet_metadata": json.dumps(metadata or {}, sort_keys=True, default=str),
        "output": "sigmoid probabilities (N, H, W)",
    })
    # One self-contained file: the full model's weights (~170 MB) are far below protobuf's 2 GB cap.
    onnx.save_model(proto, str(path))
    return path


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The metadata properties of an ONNX file (``jaffnet_config``, ``jaffnet_weights_sha256``...)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError... for unreadable files
        raise ValueError(f"{path} is not a readable ONNX file: {exc}") from exc
    return {p.key: p.value for p in proto.metadata_props}


def check_exported_from(onnx_path: str | Path, model: torch.nn.Module) -> None:
    """ValueError unless the ONNX file at ``onnx_path`` holds exactly ``model``'s weights (its fingerprint)."""
    stored = read_onnx_metadata(onnx_path).get("jaffnet_weights_sha256")
    if stored != weights_fingerprint(model):
        raise ValueError(f"{onnx_path} was not exported from this model's weights "
                         f"({'no fingerprint in the file' if stored is None else 'fingerprint differs'}); "
                         "re-export it with `jaffnet export`")


@contextlib.contextmanager
def exported_onnx(model: torch.nn.Module, image_size: int = 256, onnx_path: str | Path | None = None) -> Iterator[Path]:
    """An ONNX file of ``model``: ``onnx_path`` (from ``jaffnet export``) once checked to hold its
    weights, else a fresh export at ``image_size`` into a temporary folder, deleted on exit."""
    if onnx_path is not None:
        check_exported_from(onnx_path, model)
        yield Path(onnx_path)
        return
    with tempfile.TemporaryDirectory(prefix="jaffnet-onnx-") as tmp:
        yield export_onnx(model, Path(tmp) / "model.onnx", image_size=image_size)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of the model's float32 state_dict: ties an exported file to its weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _cpu_eval_copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).float().cpu().eval()


class _quiet_exporter:
    """The exporter logs a torchvision notice and raises FutureWarnings from torch's own
    internals; none of it is actionable here, so keep the CLI output readable."""

    def __enter__(self):
        self._logger = logging.getLogger("torch.onnx")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore", FutureWarning)

    def __exit__(self, *exc):
        self._warnings.__exit__(*exc)
        self._logger.setLevel(self._level)
