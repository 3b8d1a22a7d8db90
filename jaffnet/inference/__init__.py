"""Fast inference for trained JAFFNet models.

``build_predictor(model, backend)`` gives a ``Predictor`` (numpy in, probabilities out)
for any backend in ``BACKENDS``; ``export_onnx`` writes the ONNX file the ``onnx``
backend and ``jaffnet export`` use; ``quantize_int8`` writes the INT8 file set the ``int8``
backend runs (OpenVINO + NNCF, the optional ``openvino`` extra).
"""

from jaffnet.inference.fusion import fold_batchnorm
from jaffnet.inference.onnx_export import export_onnx, read_onnx_metadata, weights_fingerprint
from jaffnet.inference.predictor import (
    BACKENDS,
    CPU_BACKENDS,
    OnnxPredictor,
    OpenVinoPredictor,
    Predictor,
    TorchPredictor,
    backend_options,
    build_predictor,
    error_bound,
)
from jaffnet.inference.probability import ProbabilityMap
from jaffnet.inference.quantization import AccuracyControl, quantize_int8, read_int8_manifest

__all__ = [
    "AccuracyControl",
    "BACKENDS",
    "CPU_BACKENDS",
    "OnnxPredictor",
    "OpenVinoPredictor",
    "Predictor",
    "ProbabilityMap",
    "TorchPredictor",
    "backend_options",
    "build_predictor",
    "error_bound",
    "export_onnx",
    "fold_batchnorm",
    "quantize_int8",
    "read_int8_manifest",
    "read_onnx_metadata",
    "weights_fingerprint",
]
