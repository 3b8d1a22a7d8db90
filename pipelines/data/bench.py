"""`jaffnet bench data`: can decoding + augmentation keep up with training?

Times the same per-batch work (:func:`pipelines.data.dataset.prepare_batch`: decode,
paired augmentation, resize to uint8 model inputs) in a plain single-process loop and
through Ray Data the way training runs it (the train split's encoded rows materialised
once, one dataset re-executed per epoch with the epoch clock), over the same rows, and
what the demo's trainer consumes at this size (its workers training the model of
``pipelines/training/demo.yaml`` at its batch size on one thread each). Prints the figures and their ratios from one run.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.data.augment import AugmentConfig
from pipelines.data.dataset import build_dataset, iter_encoded_batches, prepare_batch, read_split


@dataclass
class DataBenchmark:
    images: int
    image_size: int
    plain_images_per_s: float
    ray_images_per_s: float  # the best warm epoch: the first one also starts Ray workers
    ray_first_epoch_images_per_s: float
    trainer_images_per_s: float

    def report(self) -> str:
        return "\n".join([
            f"decode + augment to uint8 model inputs, {self.images} images at {self.image_size}x{self.image_size}",
            f"  plain loop (1 process)           {self.plain_images_per_s:8.1f} images/s",
            f"  Ray Data, warm epoch             {self.ray_images_per_s:8.1f} images/s   "
            f"{self.ray_images_per_s / self.plain_images_per_s:5.2f}x the plain loop",
            f"  Ray Data, first epoch            {self.ray_first_epoch_images_per_s:8.1f} images/s",
            f"  demo trainer consumes            {self.trainer_images_per_s:8.1f} images/s   "
            f"Ray Data supplies {self.ray_images_per_s / self.trainer_images_per_s:5.1f}x that",
        ])


def _plain_loop(dataset_dir: Path, image_size: int, batch_size: int, config: AugmentConfig) -> tuple[int, float]:
    start, images = time.perf_counter(), 0
    for batch in iter_encoded_batches(dataset_dir, "train", batch_size):
        images += len(prepare_batch(batch, image_size, True, 0, 0, config)["id"])
    return images, time.perf_counter() - start


def _ray_epochs(dataset_dir: Path, image_size: int, batch_size: int, num_cpus: float, epochs: int) -> list[float]:
    """Images/s of each epoch of one training-style dataset."""
    from pipelines.data.epochs import set_epoch, start_epoch_clock

    clock = start_epoch_clock(f"epoch-clock-bench-data-{time.time_ns()}")
    encoded = read_split(dataset_dir, "train", rows_per_block=batch_size).materialize()
    dataset = build_dataset(encoded, "train", image_size, augment=True, epoch=clock, num_cpus=num_cpus,
                            batch_size=batch_size)
    rates = []
    for epoch in range(epochs):
        set_epoch(clock, epoch)
        start, images = time.perf_counter(), 0
        for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
            images += len(batch["id"])
        rates.append(images / (time.perf_counter() - start))
    return rates


def demo_trainer_rate(image_size: int, steps: int = 3) -> float:
    """Images/s the demo's workers consume: one-thread train steps of the demo model
    (``pipelines.training.bench.bench_training``), times the number of workers."""
    import torch

    from pipelines.training.bench import bench_training
    from pipelines.training.config import DEMO_CONFIG, load_config

    demo = load_config(DEMO_CONFIG)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = bench_training(demo, image_size, demo.batch_size, steps)
    finally:
        torch.set_num_threads(threads)
    return result.images_per_s * demo.num_workers


def bench_data(dataset_dir: str | Path | None = None, *, count: int = 128, image_size: int = 256,
               batch_size: int = 64, epochs: int = 3, num_cpus: float = 0.5) -> DataBenchmark:
    """Benchmark on ``dataset_dir``'s train split, or on ``count`` fresh synthetic frames."""
    from pipelines.data.ingestion import ingest
    from pipelines.data.synth import synthesize
    from pipelines.runtime import configure_data_context

    configure_data_context()  # the reader training uses (Ray Data's default one costs seconds per read here)
    config = AugmentConfig()
    with tempfile.TemporaryDirectory(prefix="jaffnet-bench-data-") as tmp:
        if dataset_dir is None:
            synthesize(Path(tmp) / "synth", count=count, size=image_size, seed=0)
            dataset_dir = ingest(Path(tmp) / "synth", Path(tmp) / "dataset", "folder",
                                 val_fraction=0.0, test_fraction=0.0).dataset_dir
        dataset_dir = Path(dataset_dir)
        images, plain_seconds = _plain_loop(dataset_dir, image_size, batch_size, config)
        ray_rates = _ray_epochs(dataset_dir, image_size, batch_size, num_cpus, max(2, epochs))
    return DataBenchmark(images, image_size, images / plain_seconds, max(ray_rates[1:]), ray_rates[0],
                         demo_trainer_rate(image_size))
