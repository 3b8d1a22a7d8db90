"""Fast inference for trained JAFFNet models.

``build_predictor(model, backend)`` gives a ``Predictor`` (numpy in, probabilities out)
for any backend in ``BACKENDS``; ``export_onnx`` writes the ONNX file the ``onnx``
backend and ``jaffnet export`` use; ``quantize_int8`` writes the INT8 file set the ``int8``
backend runs (OpenVINO + NNCF, the optional ``openvino`` extra; ``int8_files`` reads it).
One module per runtime (``torch_backend``, ``onnxruntime_backend``, ``openvino_backend``,
``int8_backend``), listed by ``backends``; none of them imports this package.
"""

from jaffnet.inference.fusion import fold_batchnorm
from jaffnet.inference.onnx_export import export_onnx, read_onnx_metadata, weights_fingerprint
from jaffnet.inference.backends import BACKENDS, CPU_BACKENDS, backend_options, build_predictor, error_bound
from jaffnet.inference.int8_files import read_int8_manifest
from jaffnet.inference.onnxruntime_backend import OnnxPredictor
from jaffnet.inference.openvino_backend import OpenVinoPredictor
from jaffnet.inference.predictor import Predictor
from jaffnet.inference.probability import ProbabilityMap
from jaffnet.inference.quantization import AccuracyControl, quantize_int8
from jaffnet.inference.torch_backend import TorchPredictor

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
