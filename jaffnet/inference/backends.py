"""The inference backends: ``BACKENDS``, ``build_predictor`` and what each promises.

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
int8       cpu     an INT8 file set from ``quantize_int8`` run by OpenVINO
cuda-fp16  cuda    ``fused`` in float16 on the GPU, replayed through CUDA graphs
cuda-bf16  cuda    the same in bfloat16
========== ======= ===========================================================

Each runtime has its own module: ``torch_backend`` (eager, fused, compile, cpu-bf16, cuda-*),
``onnxruntime_backend`` (onnx), ``openvino_backend`` (openvino), ``int8_backend`` (int8,
whose files ``int8_files`` reads and writes). This module only lists them.

Float32 and float16 paths match eager within 1e-3 on probabilities; the bfloat16 ones
trade precision for speed (within 1e-2; ``error_bound(name)``). ``int8`` promises no
logit-level bound (``error_bound`` is a loose sanity limit): its accuracy is judged on
metrics and verdicts by the export's gate.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from jaffnet.inference.int8_backend import build_int8
from jaffnet.inference.onnxruntime_backend import build_onnx
from jaffnet.inference.openvino_backend import build_openvino
from jaffnet.inference.predictor import Predictor
from jaffnet.inference.torch_backend import (
    build_compile,
    build_cpu_bf16,
    build_eager,
    build_fused,
    cuda_builder,
)

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
        Backend("eager", build_eager),
        Backend("fused", build_fused),
        Backend("compile", build_compile),
        Backend("onnx", build_onnx, cpu_only=True),
        Backend("cpu-bf16", build_cpu_bf16, cpu_only=True, error_bound=BF16_BOUND),
        Backend("openvino", build_openvino, cpu_only=True),
        Backend("int8", build_int8, cpu_only=True, error_bound=INT8_BOUND),
        Backend("cuda-fp16", cuda_builder("cuda-fp16", torch.float16), needs_cuda=True),
        Backend("cuda-bf16", cuda_builder("cuda-bf16", torch.bfloat16), needs_cuda=True, error_bound=BF16_BOUND),
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
    normalised float32 (N, C, H, W) batches) with ``image_size`` and ``fp32_modules``;
    ``backend_options(name)`` lists them.
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
