"""`jaffnet bench data`: can decoding + augmentation keep up with training?

Times the same per-batch work (:func:`pipelines.data.dataset.prepare_batch`: decode,
paired augmentation, resize, normalise) through Ray Data and in a plain single-process
loop over the same Parquet rows.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.data.augment import AugmentConfig
from pipelines.data.dataset import build_dataset, iter_encoded_batches, prepare_batch


@dataclass
class DataBenchmark:
    images: int
    image_size: int
    plain_images_per_s: float
    ray_images_per_s: float  # best of the passes: the first one also starts Ray workers
    ray_first_pass_images_per_s: float

    def report(self) -> str:
        return "\n".join([
            f"decode + augment + normalise, {self.images} images at {self.image_size}x{self.image_size}",
            f"  plain loop (1 process)   {self.plain_images_per_s:8.1f} images/s",
            f"  Ray Data (warm)          {self.ray_images_per_s:8.1f} images/s",
            f"  Ray Data (first pass)    {self.ray_first_pass_images_per_s:8.1f} images/s",
        ])


def _plain_loop(dataset_dir: Path, image_size: int, batch_size: int, config: AugmentConfig) -> tuple[int, float]:
    start, images = time.perf_counter(), 0
    for batch in iter_encoded_batches(dataset_dir, "train", batch_size):
        images += len(prepare_batch(batch, image_size, True, 0, 0, config)["id"])
    return images, time.perf_counter() - start


def _ray_pass(dataset_dir: Path, image_size: int, batch_size: int, epoch: int,
              num_cpus: float) -> tuple[int, float]:
    dataset = build_dataset(dataset_dir, "train", image_size, augment=True, epoch=epoch,
                            num_cpus=num_cpus, batch_size=batch_size)
    start, images = time.perf_counter(), 0
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
        images += len(batch["id"])
    return images, time.perf_counter() - start


def bench_data(dataset_dir: str | Path | None = None, *, count: int = 128, image_size: int = 256,
               batch_size: int = 16, passes: int = 2, num_cpus: float = 0.5) -> DataBenchmark:
    """Benchmark on ``dataset_dir``'s train split, or on ``count`` fresh synthetic frames."""
    from pipelines.data.ingestion import ensure_ray, ingest
    from pipelines.data.synth import synthesize

    ensure_ray()
    config = AugmentConfig.from_yaml()
    with tempfile.TemporaryDirectory(prefix="jaffnet-bench-data-") as tmp:
        if dataset_dir is None:
            synthesize(Path(tmp) / "synth", count=count, size=image_size, seed=0)
            dataset_dir = ingest(Path(tmp) / "synth", Path(tmp) / "dataset", "folder",
                                 val_fraction=0.0, test_fraction=0.0).dataset_dir
        dataset_dir = Path(dataset_dir)
        images, plain_seconds = _plain_loop(dataset_dir, image_size, batch_size, config)
        ray_rates = []
        for epoch in range(max(1, passes)):
            ray_images, seconds = _ray_pass(dataset_dir, image_size, batch_size, epoch, num_cpus)
            ray_rates.append(ray_images / seconds)
    return DataBenchmark(images, image_size, images / plain_seconds, max(ray_rates), ray_rates[0])
