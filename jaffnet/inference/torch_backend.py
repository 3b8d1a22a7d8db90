"""The PyTorch backends: ``eager``, ``fused``, ``compile``, ``cpu-bf16``, ``cuda-fp16`` and ``cuda-bf16``.

All run the model in this process through torch: eager is the plain eval-mode reference;
the others fold BatchNorm into the convolutions and run channels-last, then compile it
(Inductor), run it in bfloat16 on a CPU with native bf16, or replay it through CUDA graphs
in float16/bfloat16 on the GPU.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from jaffnet.inference.cuda_graphs import CudaGraphRunner
from jaffnet.inference.fusion import fold_batchnorm
from jaffnet.inference.predictor import Predictor, check_threads
from jaffnet.inference.probability import ProbabilityMap


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


def _set_threads(threads: int | None) -> None:
    check_threads(threads)
    if threads is not None:
        torch.set_num_threads(threads)  # process-wide: torch has one intra-op pool


def _eval_copy(model: nn.Module, device: str) -> nn.Module:
    return copy.deepcopy(model).to(device).eval()


def _fused_module(model: nn.Module, device: str, dtype: torch.dtype = torch.float32) -> ProbabilityMap:
    folded = fold_batchnorm(model).to(device=device, dtype=dtype, memory_format=torch.channels_last)
    return ProbabilityMap(folded).eval()


def build_eager(model, device, threads: int | None = None):
    _set_threads(threads)
    return TorchPredictor(ProbabilityMap(_eval_copy(model, device)), "eager", device, model.in_channels)


def build_fused(model, device, threads: int | None = None):
    _set_threads(threads)
    return TorchPredictor(_fused_module(model, device), "fused", device, model.in_channels, channels_last=True)


def build_compile(model, device, threads: int | None = None, mode: str | None = None, dynamic: bool | None = False,
                  compiler: str = "inductor"):
    _set_threads(threads)
    # Freezing turns weights into constants so Inductor can pre-pack them for oneDNN.
    freeze = compiler == "inductor" and mode is None
    compiled = torch.compile(_fused_module(model, device), backend=compiler, mode=mode, dynamic=dynamic,
                             options={"freezing": True} if freeze else None)
    return TorchPredictor(compiled, "compile", device, model.in_channels, channels_last=True)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively here (AVX512-BF16 or AMX); without it bf16 is emulated, slowly."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def build_cpu_bf16(model, device, threads: int | None = None):
    if not cpu_has_native_bf16():
        raise RuntimeError("backend 'cpu-bf16' needs a CPU with native bfloat16 (AVX512-BF16 or AMX); "
                           "this one would emulate it slowly: use 'fused' or 'onnx'")
    _set_threads(threads)
    module = _fused_module(model, device, torch.bfloat16)
    return TorchPredictor(module, "cpu-bf16", device, model.in_channels, torch.bfloat16, channels_last=True)


def cuda_builder(name: str, dtype: torch.dtype):
    """The builder of the ``cuda-*`` backend ``name``: the fused model in ``dtype`` on the GPU."""
    def build(model, device, cuda_graphs: bool = True):
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise RuntimeError(f"backend '{name}' needs a GPU with bfloat16 support; use 'cuda-fp16'")
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
        module = _fused_module(model, device, dtype)
        forward = CudaGraphRunner(module) if cuda_graphs else module
        return TorchPredictor(forward, name, device, model.in_channels, dtype, channels_last=True)

    return build
