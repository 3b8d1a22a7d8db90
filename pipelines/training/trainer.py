"""The Ray Train ``TorchTrainer`` for JAFFNet: datasets, scaling, checkpoints, failures.

DDP runs over gloo on CPUs and NCCL on GPUs (Ray's ``TorchConfig`` picks by device); the
training loop is ``pipelines.training.loop.train_loop_per_worker``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines import storage
from pipelines.runtime import configure_data_context
from pipelines.training.config import TrainConfig
from pipelines.training.loop import TRAIN_DATASET, fail_once_epoch, train_loop_per_worker


def run_dir(cfg: TrainConfig, run_name: str) -> str:
    """Where the run's checkpoints live: a local/shared folder or a URI."""
    return storage.join(cfg.storage_path, run_name)


def local_run_dir(cfg: TrainConfig, run_name: str) -> str | None:
    """The run's folder when checkpoints live on a local/shared filesystem, else None (the
    marker file of the injected-failure test hook is a local file)."""
    return None if storage.is_uri(cfg.storage_path) else run_dir(cfg, run_name)


def build_datasets(cfg: TrainConfig, dataset_dirs: Sequence[str], epoch_clock: str) -> dict[str, Any]:
    """The run's one training dataset: the train split's encoded rows (of several datasets, the
    union of their train splits), read from Parquet once into the object store, decoded and
    augmented lazily for the config's input mode.
    Re-executed every epoch; the UDF reads the epoch from ``epoch_clock`` (see
    ``pipelines.data.epochs``). One dataset means one Ray Train split coordinator for the
    whole run, however many epochs. Validation reads whole frames itself (see the loop)."""
    from pipelines.data.dataset import build_dataset, read_split

    encoded_train = read_split(dataset_dirs, "train").materialize()
    return {TRAIN_DATASET: build_dataset(encoded_train, "train", cfg.image_size, augment=True,
                                         input_mode=cfg.input_mode, seed=cfg.seed, epoch=epoch_clock,
                                         config=cfg.augment)}


def build_run_config(cfg: TrainConfig, run_name: str, callbacks: Sequence[Any] = ()):
    """Keep the best checkpoint (by ``cfg.best_metric``) and, always, the latest one;
    restart a failed worker group from the latest checkpoint up to ``max_failures`` times."""
    import ray.train

    return ray.train.RunConfig(
        name=run_name,
        storage_path=storage.resolve(cfg.storage_path),  # Ray needs an absolute path or a URI
        checkpoint_config=ray.train.CheckpointConfig(
            num_to_keep=1, checkpoint_score_attribute=cfg.best_metric, checkpoint_score_order=cfg.best_mode
        ),
        failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
        logging_config=ray.train.LoggingConfig(log_level=cfg.ray_log_level),
        callbacks=list(callbacks),
    )


def build_trainer(cfg: TrainConfig, data: str | Path | Sequence[str | Path], *, run_config,
                  datasets: dict[str, Any] | None = None):
    """A ``TorchTrainer`` running ``train_loop_per_worker`` on ``cfg.num_workers`` workers, on one
    dataset or several (``data``: the union of their train splits, validated on their val splits)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipelines.data.dataset import dataset_list
    from pipelines.data.epochs import clock_name, start_epoch_clock

    configure_data_context()  # before the datasets are built; the trainer hands it to the workers
    dataset_dirs = dataset_list(data)
    fail_at = fail_once_epoch(cfg.epochs)  # before any Ray work: a bad value fails now
    clock = start_epoch_clock(clock_name(run_config.name or "unnamed"))
    datasets = datasets if datasets is not None else build_datasets(cfg, dataset_dirs, clock)
    loop_config = {
        "config": cfg.to_dict(),
        "dataset_dirs": dataset_dirs,
        "epoch_clock": clock,
        "run_dir": local_run_dir(cfg, run_config.name) if run_config.name else None,
        "fail_once_at_epoch": fail_at,
    }
    resources = {"GPU": 1, "CPU": cfg.cpus_per_worker} if cfg.use_gpu else {"CPU": cfg.cpus_per_worker}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                               resources_per_worker=resources),
        datasets=datasets,
        # Split each epoch's train data across workers.
        dataset_config=ray.train.DataConfig(datasets_to_split=list(datasets)),
        run_config=run_config,
    )
