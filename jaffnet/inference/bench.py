"""Inference benchmarks: backends against eager, the synthetic frames they run on, and the timing and
table helpers the training benchmarks (``pipelines.training.bench``) share.

Every speed-up is a ratio against eager PyTorch measured in the same process on the
same inputs, because absolute times on shared machines drift between runs. Each row
also reports the largest probability difference from eager, so a fast path that
drifts numerically shows up next to its speed.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from jaffnet.inference.backends import backend_options, build_predictor
from jaffnet.inference.predictor import Predictor
from jaffnet.model import JAFFNet
from jaffnet.preprocess import normalize

INT8_BENCH_CALIBRATION = 16  # synthetic frames the int8 backend is calibrated on in a bench


@dataclass
class InferenceResult:
    device: str
    backend: str
    image_size: int
    batch_size: int
    latency_ms: float  # median wall time of one batch
    cpu_ms: float  # median CPU time of this process (all its threads) for one batch
    images_per_s: float
    speedup: float | None  # wall-time ratio against eager on the same device, size and batch
    cpu_speedup: float | None  # the same by CPU time: steadier when other processes share the cores
    max_abs_diff: float | None  # largest |p - p_eager| on the same input


@dataclass
class Timings:
    wall: list[float]  # seconds per call
    cpu: list[float]  # process CPU seconds per call (every thread of this process)


def time_call(fn: Callable[[], object], iters: int, warmup: int, sync: Callable[[], None] = lambda: None) -> Timings:
    """Wall and CPU times of ``iters`` calls after ``warmup`` untimed ones.

    On a machine shared with other jobs wall time includes waiting for a core; CPU time
    does not, which makes it the steadier figure there (with one thread it is the work).
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    for _ in range(warmup):
        fn()
    sync()
    timings = Timings([], [])
    for _ in range(iters):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        timings.wall.append(time.perf_counter() - wall)
        timings.cpu.append(time.process_time() - cpu)
    return timings


def bench_inference(predictors: dict[str, Predictor], image_sizes: Sequence[int], batch_sizes: Sequence[int],
                    iters: int, warmup: int = 1, seed: int = 0) -> list[InferenceResult]:
    """Time every predictor at every (size, batch); ``predictors`` maps a label to a predictor.

    The predictors take turns batch by batch (round-robin), so load from other
    processes drifting during the run hits all of them alike. Speed-ups and
    differences are taken against the ``eager`` predictor on the same device.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    rng = np.random.default_rng(seed)
    ordered = sorted(predictors.values(), key=lambda p: p.backend != "eager")  # eager first
    results = []
    for size in image_sizes:
        for batch_size in batch_sizes:
            batch = rng.standard_normal((batch_size, 3, size, size), dtype=np.float32)
            # The first call of each also warms up (compiles, captures CUDA graphs).
            outputs = [predictor(batch) for predictor in ordered]
            for _ in range(max(0, warmup - 1)):
                for predictor in ordered:
                    predictor(batch)
            timings = [Timings([], []) for _ in ordered]
            for _ in range(iters):
                for predictor, timing in zip(ordered, timings):
                    once = time_call(lambda: predictor(batch), iters=1, warmup=0, sync=synchronizer(predictor.device))
                    timing.wall += once.wall
                    timing.cpu += once.cpu
            medians = [(statistics.median(t.wall), statistics.median(t.cpu)) for t in timings]
            eager = {p.device: (m, out) for p, m, out in zip(ordered, medians, outputs) if p.backend == "eager"}
            for predictor, (latency, cpu), output in zip(ordered, medians, outputs):
                reference = eager.get(predictor.device)
                results.append(InferenceResult(
                    device=predictor.device, backend=predictor.backend, image_size=size, batch_size=batch_size,
                    latency_ms=latency * 1e3, cpu_ms=cpu * 1e3, images_per_s=batch_size / latency,
                    speedup=reference[0][0] / latency if reference else None,
                    cpu_speedup=reference[0][1] / cpu if reference and cpu > 0 else None,
                    max_abs_diff=float(np.abs(output - reference[1]).max()) if reference else None,
                ))
    return results


def synchronizer(device: str) -> Callable[[], None]:
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def build_predictors(model: JAFFNet, backends: Sequence[str], device: str | None = None,
                     threads: int | None = None, image_size: int = 256,
                     calibration_frames: int = INT8_BENCH_CALIBRATION,
                     int8_fp32_modules: Sequence[str] | None = None) -> tuple[dict[str, Predictor], dict[str, str]]:
    """Build each backend, returning the predictors and, for those that could not be
    built here (no GPU, no native bf16, no OpenVINO...), the reason. ``int8`` is quantised
    on the spot on ``calibration_frames`` synthetic ``image_size`` frames (a benchmark of
    speed, not of a trained model's accuracy), with ``int8_fp32_modules`` float32 (default:
    ``quantize_int8``'s)."""
    predictors, skipped = {}, {}
    for backend in backends:
        options = {"threads": threads} if threads and "threads" in backend_options(backend) else {}
        if backend == "int8":
            in_channels = model.in_channels
            options.update(calibration_batches=[synthetic_frames(calibration_frames, image_size, in_channels)],
                           image_size=image_size, fp32_modules=int8_fp32_modules)
        label = f"{backend}@{device}" if device else backend
        start = time.perf_counter()
        try:
            predictors[label] = build_predictor(model, backend, device=device, **options)
        except (RuntimeError, ValueError, ImportError) as exc:
            skipped[label] = str(exc)
            continue
        build_s = time.perf_counter() - start
        if backend == "int8":
            predictors[label].note += f", synthetic {image_size}x{image_size}"
        note = getattr(predictors[label], "note", "")
        if note:
            print(f"  {label}: {note}", flush=True)
        elif build_s > 5:
            print(f"  built {label} in {build_s:.0f} s", flush=True)
    return predictors, skipped


def synthetic_frames(count: int, image_size: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """``count`` deterministic, image-like synthetic frames, ImageNet-normalised float32
    ``(count, channels, S, S)``: smooth shading, fine texture and a few dark/bright blobs.
    For calibrating random-weight models in benchmarks only: a trained model must be
    calibrated on its own data."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive int, got {count!r}")
    rng = np.random.default_rng(seed)
    side = image_size
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    frames = np.empty((count, side, side, 3), np.uint8)
    for i in range(count):
        base = rng.uniform(60, 200)
        shade = base + rng.uniform(-40, 40) * xx + rng.uniform(-40, 40) * yy
        coarse = rng.standard_normal((side // 16 + 1, side // 16 + 1)).astype(np.float32)
        coarse = np.kron(coarse, np.ones((16, 16), np.float32))[:side, :side]
        image = shade + 12 * coarse + 6 * rng.standard_normal((side, side)).astype(np.float32)
        for _ in range(rng.integers(1, 4)):  # defect-like blobs
            cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.02, 0.12)
            blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
            image[blob] += rng.choice([-1, 1]) * rng.uniform(40, 90)
        tint = rng.uniform(0.9, 1.1, 3).astype(np.float32)
        frames[i] = np.clip(image[..., None] * tint, 0, 255).astype(np.uint8)
    normalised = normalize(frames, "imagenet")  # random-weight benchmark models are imagenet ones
    if channels == 1:
        normalised = normalised.mean(axis=1, keepdims=True)
    return np.ascontiguousarray(normalised, dtype=np.float32)


def machine_description(threads: int) -> str:
    cpu = cpu_name()
    line = f"CPU: {cpu}, {os.cpu_count()} logical cores, torch threads {threads}; torch {torch.__version__}"
    if torch.cuda.is_available():
        line += f"; GPU: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    else:
        line += "; no GPU"
    return line


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def format_inference(results: Sequence[InferenceResult]) -> str:
    header = ["device", "backend", "size", "batch", "latency ms", "images/s", "vs eager", "cpu ms", "vs eager (cpu)",
              "max|dp|"]
    rows = [[r.device, r.backend, str(r.image_size), str(r.batch_size), f"{r.latency_ms:.1f}", f"{r.images_per_s:.2f}",
             _ratio(r.speedup), f"{r.cpu_ms:.1f}", _ratio(r.cpu_speedup),
             f"{r.max_abs_diff:.1e}" if r.max_abs_diff is not None else "-"] for r in results]
    return format_table(header, rows)


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def as_dicts(results: Sequence) -> list[dict]:
    return [asdict(r) for r in results]
