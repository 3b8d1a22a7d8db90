"""The ``int8`` backend: an INT8 file set run by OpenVINO's CPU plugin.

The set comes from ``quantize_int8`` / ``jaffnet export --format int8`` (``quantized_path``)
and runs only if ``int8_files.check_file_set`` finds it was quantised from the model's own
weights and its files are intact; or the model is quantised now on ``calibration_batches``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from torch import nn

from jaffnet.inference.int8_files import check_file_set
from jaffnet.inference.onnx_export import weights_fingerprint
from jaffnet.inference.openvino_backend import OpenVinoPredictor
from jaffnet.inference.predictor import check_threads
from jaffnet.inference.quantization import DEFAULT_FP32_MODULES, quantize_int8


def load_int8(path: str | Path, model: nn.Module, threads: int | None = None) -> OpenVinoPredictor:
    """An ``OpenVinoPredictor`` (backend "int8") for the file set at ``path``, after checking
    that it was quantised from ``model``'s weights and that its files are intact."""
    manifest, model_xml = check_file_set(path, weights_fingerprint(model))
    predictor = OpenVinoPredictor(model_xml, threads=threads, backend="int8")
    predictor.manifest = manifest
    predictor.note = f"INT8 (OpenVINO), calibrated on {manifest['calibration']['frames']} frame(s)"
    return predictor


def build_int8(model, device, threads: int | None = None, quantized_path: str | None = None,
               calibration_batches: Iterable[np.ndarray] | None = None, image_size: int = 256,
               fp32_modules: Sequence[str] | None = None):
    """Run an INT8 file set (``quantized_path``: from ``quantize_int8`` or ``jaffnet export
    --format int8``; refused unless quantised from ``model``'s weights), or quantise ``model``
    now on ``calibration_batches`` (normalised float32 (N, C, H, W) batches; the ONNX export
    at ``image_size``), with ``fp32_modules`` as ``quantize_int8`` takes them (default its own)."""
    check_threads(threads)
    if quantized_path is not None:
        if calibration_batches is not None or fp32_modules is not None:
            raise ValueError("int8: pass quantized_path or calibration batches (and fp32_modules), not both")
        return load_int8(quantized_path, model, threads=threads)
    if calibration_batches is None:
        raise ValueError("backend 'int8' needs quantized_path (a file set from `jaffnet export --format int8`) "
                         "or calibration_batches to quantise the model now")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jaffnet-int8-") as tmp:
        manifest = quantize_int8(model, calibration_batches, tmp, image_size=image_size,
                                 fp32_modules=DEFAULT_FP32_MODULES if fp32_modules is None else fp32_modules)
        predictor = load_int8(manifest, model, threads=threads)
    predictor.note = (f"quantised to INT8 in {time.perf_counter() - started:.1f} s, calibrated on "
                      f"{predictor.manifest['calibration']['frames']} frame(s)")
    return predictor
