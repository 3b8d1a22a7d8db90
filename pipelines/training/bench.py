"""Training benchmarks: one process's training-step throughput (:func:`bench_training`, in
``jaffnet bench model`` and ``jaffnet bench data``), and ``jaffnet bench train``: does a long
training run keep its memory flat?

``bench_train``: a tiny run (width 0.125, 32 px, synthetic data) for ``--epochs`` epochs with
``RayMemoryProbe``: prints the summed RSS of the Ray processes and the number of Ray Data
split coordinators at epoch 5 and at the last epoch, and the growth between them.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.training.config import TrainConfig

TINY = ["width=0.125", "image_size=32", "batch_size=4", "num_workers=2", "cpus_per_worker=0.5", "torch_threads=1",
        "num_overlays=0", "experiment=bench-train", "model_name=bench-train", "best_metric=val_mae"]
GROWTH_LIMIT = 0.10


@dataclass
class TrainingResult:
    device: str
    precision: str
    image_size: int
    batch_size: int
    step_ms: float  # median forward + backward + optimizer step (wall)
    cpu_ms: float  # the same in process CPU time
    images_per_s: float


def bench_training(cfg: TrainConfig, image_size: int, batch_size: int, iters: int, warmup: int = 1,
                   device: str = "cpu", precision: str = "fp32") -> TrainingResult:
    """Images/s of one process training a fresh model of ``cfg``: the model, loss and optimiser
    the training factory builds, and the loop's own step (forward, loss, backward, clipping, step)."""
    import torch

    from jaffnet.inference.bench import synchronizer, time_call
    from jaffnet.model import IN_CHANNELS
    from pipelines.training.factory import build_loss
    from pipelines.training.loop import build_training, train_step

    if batch_size < 2:
        raise ValueError("training batches need >= 2 images (the DRF global branch has BatchNorm on a 1x1 map)")
    autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    model, optimizer, _, _, _ = build_training(cfg, torch.device(device))  # as the loop lays it out
    loss_fn = build_loss(cfg)
    scaler = torch.amp.GradScaler(device, enabled=precision == "fp16")  # this benchmark's precision, not the config's
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, IN_CHANNELS, image_size, image_size, generator=generator)
    masks = (torch.rand(batch_size, 1, image_size, image_size, generator=generator) > 0.9).float()
    images, masks = images.to(device), masks.to(device)

    def step():
        train_step(model, images, masks, loss_fn, optimizer, scaler, cfg.grad_clip_norm, autocast_dtype)

    timings = time_call(step, iters, warmup, sync=synchronizer(device))
    wall, cpu = statistics.median(timings.wall), statistics.median(timings.cpu)
    return TrainingResult(device, precision, image_size, batch_size, wall * 1e3, cpu * 1e3, batch_size / wall)


def format_training(results: Sequence[TrainingResult]) -> str:
    from jaffnet.inference.bench import format_table

    header = ["device", "precision", "size", "batch", "step ms", "cpu ms", "images/s"]
    rows = [[r.device, r.precision, str(r.image_size), str(r.batch_size), f"{r.step_ms:.1f}", f"{r.cpu_ms:.1f}",
             f"{r.images_per_s:.2f}"] for r in results]
    return format_table(header, rows)


def bench_train(epochs: int = 40, count: int = 64) -> int:
    from pipelines.data.ingestion import ingest
    from pipelines.data.synth import synthesize
    from pipelines.registry import configure_tracking
    from pipelines.runtime import init_ray
    from pipelines.training.config import load_config
    from pipelines.training.memory import RayMemoryProbe
    from pipelines.training.run import train

    if epochs < 6:
        raise ValueError(f"--epochs must be >= 6 to compare epoch 5 with the last, got {epochs}")
    with tempfile.TemporaryDirectory(prefix="jaffnet-bench-train-") as tmp:
        tmp = Path(tmp)
        init_ray(include_dashboard=False, log_to_driver=False)
        synthesize(tmp / "synth", count=count, size=32, seed=0, difficulty="easy")
        dataset = ingest(tmp / "synth", tmp / "dataset", "folder", seed=0).dataset_dir
        cfg = load_config(None, [*TINY, f"epochs={epochs}", f"storage_path={tmp / 'ray_results'}"])
        probe = RayMemoryProbe(tmp / "memory.jsonl")
        started = time.perf_counter()
        configure_tracking(f"sqlite:///{tmp / 'mlflow.db'}")
        train(cfg, dataset, callbacks=(probe,))
        elapsed = time.perf_counter() - started
        samples = probe.samples()
    at_5, last = samples[4], samples[-1]
    growth = last.ray_rss_mb / at_5.ray_rss_mb - 1
    print(f"jaffnet bench train: {epochs} epochs of a tiny run (width 0.125, 32 px, {count} frames) in {elapsed:.0f} s")
    print(f"{'':<14}{'Ray RSS MB':>12}{'coordinators':>14}{'epoch s':>9}")
    for label, sample in (("epoch 5", at_5), (f"epoch {last.epoch + 1}", last)):
        print(f"{label:<14}{sample.ray_rss_mb:>12.0f}{sample.split_coordinators:>14}{sample.epoch_time_s:>9.1f}")
    verdict = "ok" if growth <= GROWTH_LIMIT else f"ABOVE the {GROWTH_LIMIT:.0%} limit"
    print(f"growth from epoch 5 to the last: {growth:+.1%} ({verdict})")
    return 0 if growth <= GROWTH_LIMIT else 1
