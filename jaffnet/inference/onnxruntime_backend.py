"""The ``onnx`` backend: the model's ONNX export (``export_onnx``) run by ONNX Runtime on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaffnet.inference.onnx_export import INPUT_NAME, OUTPUT_NAME, exported_onnx
from jaffnet.inference.predictor import Predictor, check_threads


class OnnxPredictor(Predictor):
    """Runs an ONNX file written by ``export_onnx`` with ONNX Runtime."""

    def __init__(self, path: str | Path, threads: int | None = None, backend: str = "onnx"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            raise ValueError(f"{path} is not a loadable ONNX model: {exc}") from exc
        inputs = {i.name: i for i in self.session.get_inputs()}
        if INPUT_NAME not in inputs:
            raise ValueError(f"{path} has no '{INPUT_NAME}' input; was it written by `jaffnet export`?")
        channels = inputs[INPUT_NAME].shape[1]
        super().__init__(backend, "cpu", channels if isinstance(channels, int) else 3)
        self._input, self._output = INPUT_NAME, OUTPUT_NAME

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self._output], {self._input: batch})[0]


def build_onnx(model, device, threads: int | None = None, image_size: int = 256, onnx_path: str | None = None):
    """Export ``model`` to a temporary file, or run ``onnx_path`` (from ``jaffnet export``)
    after checking that it holds exactly ``model``'s weights."""
    check_threads(threads)  # ONNX Runtime has its own pool: torch's is left alone
    with exported_onnx(model, image_size, onnx_path) as path:  # the session holds the model once built
        return OnnxPredictor(path, threads=threads)
