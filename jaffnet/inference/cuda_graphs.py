"""Replay a module through CUDA graphs: one captured graph per input shape.

At batch sizes that keep an H100 busy, JAFFNet's ~100 small kernels per image are
launch-bound; a graph replays them all with one launch. Inputs are copied into a
static buffer and outputs cloned out of one, as CUDA graphs require; a lock keeps
concurrent callers (threaded servers) from sharing those buffers mid-replay.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
from torch import Tensor, nn

WARMUP_RUNS = 3  # cuDNN picks algorithms (and allocates workspaces) before capture


class CudaGraphRunner:
    def __init__(self, module: nn.Module, max_graphs: int = 8):
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA graphs need a CUDA device; none is available")
        self.module = module
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple, tuple[torch.cuda.CUDAGraph, Tensor, Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    @torch.inference_mode()
    def __call__(self, x: Tensor) -> Tensor:
        with self._lock, torch.cuda.device(x.device):
            return self._run(x)

    def _run(self, x: Tensor) -> Tensor:
        key = (tuple(x.shape), x.dtype, x.device)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(x)
            self._graphs[key] = entry
            if len(self._graphs) > self.max_graphs:  # bounded memory: forget the oldest shape
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        graph, static_input, static_output = entry
        static_input.copy_(x)
        graph.replay()
        return static_output.clone()

    def _capture(self, x: Tensor) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor]:
        static_input = torch.empty_like(x)
        static_input.copy_(x)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self.module(static_input)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = self.module(static_input)
        return graph, static_input, static_output
