"""Predictors: one call signature over several inference backends.

``build_predictor(model, backend)`` returns a ``Predictor`` mapping a normalised
(``jaffnet.preprocess``) float32 ``(N, C, H, W)`` numpy batch to float32 ``(N, H, W)``
probabilities. Every backend runs the same weights; they differ in how:

========== ======= ===========================================================
backend    device  what it does
========== ======= ===========================================================
eager      any     plain eval-mode PyTorch, float32: the reference
fused      any     BatchNorm folded into convs, channels-last, inference mode
compile    any     ``fused`` compiled by ``torch.compile`` (Inductor; compiles per shape)
onnx       cpu     ONNX export run by ONNX Runtime with all graph optimisations
cpu-bf16   cpu     ``fused`` in bfloat16; needs a CPU with native bf16 (AVX512-BF16/AMX)
openvino   cpu     the ONNX export run by OpenVINO in float32 (optional ``openvino`` extra)
int8       cpu     an INT8 file set from ``quantize_int8`` run by OpenVINO (``quantization.py``)
cuda-fp16  cuda    ``fused`` in float16 on the GPU, replayed through CUDA graphs
cuda-bf16  cuda    the same in bfloat16
========== ======= ===========================================================

Float32 and float16 paths match eager within 1e-3 on probabilities; the bfloat16 ones
trade precision for speed (within 1e-2; ``error_bound(name)``). ``int8`` promises no
logit-level bound (``error_bound`` is a loose sanity limit): its accuracy is judged on
metrics and verdicts by the export's gate.
"""

from __future__ import annotations

import copy
import inspect
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from jaffnet.inference.checks import check_batch
from jaffnet.inference.fusion import fold_batchnorm
from jaffnet.inference.probability import ProbabilityMap


class Predictor(ABC):
    """``predictor(batch)``: float32 ``(N, C, H, W)`` -> float32 ``(N, H, W)`` in [0, 1]."""

    def __init__(self, backend: str, device: str, in_channels: int):
        self.backend = backend
        self.device = device
        self.in_channels = in_channels

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._predict(check_batch(batch, self.in_channels))

    @abstractmethod
    def _predict(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` is already validated and float32."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend!r}, device={self.device!r})"


class TorchPredictor(Predictor):
    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], backend: str, device: str,
                 in_channels: int, dtype: torch.dtype = torch.float32, channels_last: bool = False):
        super().__init__(backend, device, in_channels)
        self.forward = forward
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
            x = x.to(dtype=self.dtype, memory_format=self.memory_format)
            return self.forward(x).float().cpu().numpy()


class OnnxPredictor(Predictor):
    """Runs an ONNX file written by ``export_onnx`` with ONNX Runtime."""

    def __init__(self, path: str | Path, threads: int | None = None, backend: str = "onnx"):
        import onnxruntime as ort

        from jaffnet.inference.onnx_export import INPUT_NAME, OUTPUT_NAME

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


class OpenVinoPredictor(Predictor):
    """Runs an OpenVINO-readable model (an ONNX file from ``export_onnx``, or the IR
    ``model.xml`` of an INT8 file set) on the CPU. Float32 inference precision is forced:
    on CPUs with AMX/AVX512-BF16 OpenVINO would otherwise run float layers in bfloat16.
    Calls are serialised (one infer request); each runs on ``threads`` threads."""

    def __init__(self, path: str | Path, threads: int | None = None, backend: str = "openvino"):
        from jaffnet.inference.onnx_export import INPUT_NAME, OUTPUT_NAME
        from jaffnet.inference.openvino_runtime import shared_core

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


# --------------------------------------------------------------------------- backends


def _check_threads(threads: int | None) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int, got {threads!r}")


def _threads(threads: int | None) -> None:
    _check_threads(threads)
    if threads is not None:
        torch.set_num_threads(threads)  # process-wide: torch has one intra-op pool


def _eval_copy(model: nn.Module, device: str) -> nn.Module:
    return copy.deepcopy(model).to(device).eval()


def _build_eager(model, device, threads: int | None = None):
    _threads(threads)
    return TorchPredictor(ProbabilityMap(_eval_copy(model, device)), "eager", device, model.in_channels)


def _fused_module(model: nn.Module, device: str, dtype: torch.dtype = torch.float32) -> ProbabilityMap:
    folded = fold_batchnorm(model).to(device=device, dtype=dtype, memory_format=torch.channels_last)
    return ProbabilityMap(folded).eval()


def _build_fused(model, device, threads: int | None = None):
    _threads(threads)
    return TorchPredictor(_fused_module(model, device), "fused", device, model.in_channels, channels_last=True)


def _build_compile(model, device, threads: int | None = None, mode: str | None = None, dynamic: bool | None = False,
                   compiler: str = "inductor"):
    _threads(threads)
    # Freezing turns weights into constants so Inductor can pre-pack them for oneDNN.
    freeze = compiler == "inductor" and mode is None
    compiled = torch.compile(_fused_module(model, device), backend=compiler, mode=mode, dynamic=dynamic,
                             options={"freezing": True} if freeze else None)
    return TorchPredictor(compiled, "compile", device, model.in_channels, channels_last=True)


def _build_onnx(model, device, threads: int | None = None, image_size: int = 256, onnx_path: str | None = None):
    """Export ``model`` to a temporary file, or run ``onnx_path`` (from ``jaffnet export``)
    after checking that it holds exactly ``model``'s weights."""
    return _run_onnx(OnnxPredictor, model, threads, image_size, onnx_path)


def _build_openvino(model, device, threads: int | None = None, image_size: int = 256, onnx_path: str | None = None):
    """The same ONNX file as ``onnx``, run by OpenVINO in float32."""
    return _run_onnx(OpenVinoPredictor, model, threads, image_size, onnx_path)


def _run_onnx(predictor_class, model, threads, image_size, onnx_path):
    from jaffnet.inference.onnx_export import export_onnx, read_onnx_metadata, weights_fingerprint

    _check_threads(threads)  # ONNX Runtime and OpenVINO have their own pools: torch's is left alone
    if onnx_path is not None:
        stored = read_onnx_metadata(onnx_path).get("jaffnet_weights_sha256")
        if stored != weights_fingerprint(model):
            raise ValueError(f"{onnx_path} was not exported from this model's weights "
                             f"({'no fingerprint in the file' if stored is None else 'fingerprint differs'}); "
                             "re-export it with `jaffnet export`")
        return predictor_class(onnx_path, threads=threads)
    with tempfile.TemporaryDirectory() as tmp:  # both runtimes hold the model in memory once built
        path = export_onnx(model, Path(tmp) / "model.onnx", image_size=image_size)
        return predictor_class(path, threads=threads)


def _build_int8(model, device, threads: int | None = None, quantized_path: str | None = None,
                calibration_batches=None, synthetic_calibration: int = 0, image_size: int = 256,
                fp32_modules: Sequence[str] | None = None):
    """Run an INT8 file set (``quantized_path``: from ``quantize_int8`` or ``jaffnet export
    --format int8``; refused unless quantised from ``model``'s weights), or quantise
    ``model`` now: on ``calibration_batches`` (normalised float32 (N, C, H, W) batches), or,
    for benchmarks of random-weight models only, on ``synthetic_calibration`` synthetic
    frames of side ``image_size``; ``fp32_modules`` as ``quantize_int8`` takes them (default its own)."""
    import time

    from jaffnet.inference.quantization import DEFAULT_FP32_MODULES, load_int8, quantize_int8, synthetic_frames

    _check_threads(threads)
    if quantized_path is not None:
        if calibration_batches is not None or synthetic_calibration or fp32_modules is not None:
            raise ValueError("int8: pass quantized_path or calibration batches (and fp32_modules), not both")
        return load_int8(quantized_path, model, threads=threads)
    if calibration_batches is None and not synthetic_calibration:
        raise ValueError("backend 'int8' needs quantized_path (a file set from `jaffnet export --format int8`) "
                         "or calibration_batches to quantise the model now")
    if calibration_batches is not None and synthetic_calibration:
        raise ValueError("int8: pass calibration_batches or synthetic_calibration, not both")
    if calibration_batches is None:
        if isinstance(synthetic_calibration, bool) or not isinstance(synthetic_calibration, int) \
                or synthetic_calibration < 1:
            raise ValueError(f"synthetic_calibration must be a positive int, got {synthetic_calibration!r}")
        calibration_batches = [synthetic_frames(synthetic_calibration, image_size, model.in_channels)]
        source = f"{synthetic_calibration} synthetic {image_size}x{image_size} frames"
    else:
        source = None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jaffnet-int8-") as tmp:
        manifest = quantize_int8(model, calibration_batches, tmp, image_size=image_size,
                                 fp32_modules=DEFAULT_FP32_MODULES if fp32_modules is None else fp32_modules)
        predictor = load_int8(manifest, model, threads=threads)
    frames = predictor.manifest["calibration"]["frames"]
    predictor.note = (f"quantised to INT8 in {time.perf_counter() - started:.1f} s, calibrated on "
                      f"{source or f'{frames} frame(s)'}")
    return predictor


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively here (AVX512-BF16 or AMX); without it bf16 is emulated, slowly."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _build_cpu_bf16(model, device, threads: int | None = None):
    if not cpu_has_native_bf16():
        raise RuntimeError("backend 'cpu-bf16' needs a CPU with native bfloat16 (AVX512-BF16 or AMX); "
                           "this one would emulate it slowly: use 'fused' or 'onnx'")
    _threads(threads)
    module = _fused_module(model, device, torch.bfloat16)
    return TorchPredictor(module, "cpu-bf16", device, model.in_channels, torch.bfloat16, channels_last=True)


def _cuda_builder(name: str, dtype: torch.dtype):
    def build(model, device, cuda_graphs: bool = True):
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise RuntimeError(f"backend '{name}' needs a GPU with bfloat16 support; use 'cuda-fp16'")
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
        module = _fused_module(model, device, dtype)
        forward = module
        if cuda_graphs:
            from jaffnet.inference.cuda_graphs import CudaGraphRunner

            forward = CudaGraphRunner(module)
        return TorchPredictor(forward, name, device, model.in_channels, dtype, channels_last=True)

    return build


FP32_BOUND = 1e-3  # |p - p_eager| every float32 and float16 path must stay within
BF16_BOUND = 1e-2  # bfloat16 keeps 8 mantissa bits: ~3e-3 measured on random weights
INT8_BOUND = 0.1  # a sanity limit, not a promise: the export's gate judges int8 on metrics and verdicts


@dataclass(frozen=True)
class Backend:
    name: str
    build: Callable[..., Predictor]
    needs_cuda: bool = False
    cpu_only: bool = False
    error_bound: float = FP32_BOUND  # promised max |p - p_eager| on probabilities


_BACKENDS = {
    backend.name: backend
    for backend in (
        Backend("eager", _build_eager),
        Backend("fused", _build_fused),
        Backend("compile", _build_compile),
        Backend("onnx", _build_onnx, cpu_only=True),
        Backend("cpu-bf16", _build_cpu_bf16, cpu_only=True, error_bound=BF16_BOUND),
        Backend("openvino", _build_openvino, cpu_only=True),
        Backend("int8", _build_int8, cpu_only=True, error_bound=INT8_BOUND),
        Backend("cuda-fp16", _cuda_builder("cuda-fp16", torch.float16), needs_cuda=True),
        Backend("cuda-bf16", _cuda_builder("cuda-bf16", torch.bfloat16), needs_cuda=True, error_bound=BF16_BOUND),
    )
}
BACKENDS: tuple[str, ...] = tuple(_BACKENDS)
CPU_BACKENDS: tuple[str, ...] = tuple(name for name, b in _BACKENDS.items() if not b.needs_cuda)


def error_bound(backend: str) -> float:
    """The largest |p - p_eager| ``backend`` promises: 1e-3, or 1e-2 for the bfloat16 ones; for
    ``int8`` a loose sanity limit (0.1), not a tolerance: judge int8 on metrics/verdicts."""
    return _get_backend(backend).error_bound


def backend_options(backend: str) -> tuple[str, ...]:
    """The keyword options ``build_predictor`` accepts for ``backend``."""
    params = inspect.signature(_get_backend(backend).build).parameters
    return tuple(name for name in params if name not in ("model", "device"))


def build_predictor(model: nn.Module, backend: str = "eager", device: str | None = None, **options) -> Predictor:
    """A ``Predictor`` running ``model``'s weights through ``backend`` (see ``BACKENDS``).

    ``device`` defaults to "cuda" for the ``cuda-*`` backends and "cpu" otherwise. The
    model itself is not modified. ``options`` are backend-specific: ``threads`` for CPU
    backends, ``mode``/``dynamic``/``compiler`` for ``compile``, ``onnx_path`` (a file
    from ``jaffnet export``, checked against the model's weights) and ``image_size`` for
    ``onnx`` and ``openvino``, ``cuda_graphs`` for ``cuda-*``; for ``int8``
    ``quantized_path`` (an INT8 file set from ``quantize_int8`` / ``jaffnet export --format
    int8``: its manifest, model.xml or folder; refused with ValueError unless quantised from
    ``model``'s weights), or, to quantise now, ``calibration_batches`` (an iterable of
    normalised float32 (N, C, H, W) batches) or ``synthetic_calibration`` (a frame count,
    benchmarks only) with ``image_size`` and ``fp32_modules``; ``backend_options(name)`` lists them.
    """
    spec = _get_backend(backend)
    if not isinstance(model, nn.Module) or not hasattr(model, "in_channels"):
        raise TypeError(f"expected a JAFFNet model, got {type(model).__name__}")
    device = _resolve_device(spec, device)
    allowed = backend_options(backend)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"backend '{backend}' does not take {unknown}; it takes {list(allowed) or 'no options'}")
    return spec.build(model, device, **options)


def _get_backend(backend: str) -> Backend:
    try:
        return _BACKENDS[backend]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}") from None


def _resolve_device(spec: Backend, device: str | None) -> str:
    if device is None:
        device = "cuda" if spec.needs_cuda else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError as exc:
        raise ValueError(f"invalid device {device!r}: {exc}") from None
    if spec.needs_cuda and kind != "cuda":
        raise ValueError(f"backend '{spec.name}' runs on a CUDA device, not {device!r}")
    if spec.cpu_only and kind != "cpu":
        raise ValueError(f"backend '{spec.name}' runs on the CPU only, not {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"backend '{spec.name}' on {device!r} needs a CUDA GPU, but torch sees none "
            f"(torch {torch.__version__}); CPU backends: {', '.join(CPU_BACKENDS)}"
        )
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}: use 'cpu' or 'cuda[:index]'")
    return device
