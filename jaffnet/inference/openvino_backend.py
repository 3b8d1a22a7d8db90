"""The ``openvino`` backend: the model's ONNX export run by OpenVINO's CPU plugin in float32.

``OpenVinoPredictor`` also runs the IR of an INT8 file set (``int8_backend``). Models are
read and compiled through the process's one shared core (``openvino_runtime``).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from jaffnet.inference.onnx_export import INPUT_NAME, OUTPUT_NAME, exported_onnx
from jaffnet.inference.openvino_runtime import shared_core
from jaffnet.inference.predictor import Predictor, check_threads


class OpenVinoPredictor(Predictor):
    """Runs an OpenVINO-readable model (an ONNX file from ``export_onnx``, or the IR
    ``model.xml`` of an INT8 file set) on the CPU. Float32 inference precision is forced:
    on CPUs with AMX/AVX512-BF16 OpenVINO would otherwise run float layers in bfloat16.
    Calls are serialised (one infer request); each runs on ``threads`` threads."""

    def __init__(self, path: str | Path, threads: int | None = None, backend: str = "openvino"):
        core = shared_core()
        try:
            model = core.read_model(str(path))
        except RuntimeError as exc:  # OpenVINO raises RuntimeError for missing/unreadable files
            raise ValueError(f"{path} is not a model OpenVINO can read: {exc}") from exc
        names = {name for port in model.inputs for name in port.get_names()}
        if INPUT_NAME not in names:
            raise ValueError(f"{path} has no '{INPUT_NAME}' input; was it written by `jaffnet export`?")
        channels = model.input(INPUT_NAME).get_partial_shape()[1]
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                  "ENABLE_CPU_PINNING": False}  # pinning gains nothing measurable and fights co-tenants
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(model, "CPU", config)
        super().__init__(backend, "cpu", channels.get_length() if channels.is_static else 3)
        self._request = self.compiled.create_infer_request()
        self._output = self.compiled.output(OUTPUT_NAME)
        self._input = INPUT_NAME
        self._lock = threading.Lock()
        self.note = ""  # shown by the bench: how the model was made

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:  # an infer request is not re-entrant; its output buffer is reused
            result = self._request.infer({self._input: batch})
            return np.array(result[self._output], dtype=np.float32, copy=True)


def build_openvino(model, device, threads: int | None = None, image_size: int = 256, onnx_path: str | None = None):
    """The same ONNX file as the ``onnx`` backend, run by OpenVINO in float32."""
    check_threads(threads)  # OpenVINO has its own pool: torch's is left alone
    with exported_onnx(model, image_size, onnx_path) as path:  # the compiled model holds it once built
        return OpenVinoPredictor(path, threads=threads)
