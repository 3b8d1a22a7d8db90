"""``train_loop_per_worker``: the plain function every Ray Train worker runs.

Per epoch: set the run's epoch clock and train on this worker's shard of the one ``train``
dataset (re-executed each epoch with that epoch's augmentation draw) under DDP; validate
this worker's hash share of the ``val`` frames through the model's input contract
(``jaffnet.frames``: the path evaluation and serving take), each frame decoded once, and
score them on the same rank (``SplitAccumulator``: per-image metrics, pixel histograms,
one record per frame); rank 0 merges the ranks' small accumulators, calibrates the pixel
and image thresholds and writes overlays (of its own frames) and the checkpoint; every
rank then calls ``ray.train.report`` (a barrier) with the same metrics.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from jaffnet.frames import predict_frames
from pipelines.data.dataset import Sample, iter_samples, training_arrays
from pipelines.runtime import quiet_train_report_log
from pipelines.training.checkpointing import OVERLAY_DIR, TrainingState, restore_checkpoint, save_checkpoint
from pipelines.training.config import TrainConfig
from pipelines.training.factory import (TRAINING_MEMORY_FORMAT, build_loss, build_model, build_optimizer,
                                        build_scheduler, build_weight_average)
from pipelines.training.tensors import batch_tensor, probability_maps
from pipelines.evaluation.scoring import OVERALL, SplitAccumulator, SplitScores, overlay_of


TRAIN_DATASET = "train"
VAL_SPLIT = "val"
_progress = logging.getLogger("jaffnet.training")


# A test hook, not a setting: with this variable set to an epoch index in the driver's environment
# (tests/pipelines/training/test_training_run.py), the last rank crashes once at that epoch, to test
# recovery from a worker failure. The driver reads it (``fail_once_epoch``): workers may not share its environment.
FAIL_ONCE_ENV = "JAFFNET_TEST_FAIL_ONCE_AT_EPOCH"


class InjectedFailure(RuntimeError):
    """Raised once under ``FAIL_ONCE_ENV`` to test recovery from a worker failure."""


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """``loop_config``: ``{"config": TrainConfig.to_dict(), "dataset_dirs": [str, ...], "epoch_clock": str,
    "run_dir": str | None, "fail_once_at_epoch": int | None}``."""
    import ray.train
    import ray.train.torch

    from pipelines.data.epochs import set_epoch

    cfg = TrainConfig.from_dict(loop_config["config"])
    quiet_train_report_log(cfg.ray_log_level)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    # Ray sets OMP_NUM_THREADS=1 in workers; match the CPUs this worker reserved instead.
    torch.set_num_threads(cfg.torch_threads or max(1, math.floor(cfg.cpus_per_worker)))
    torch.manual_seed(cfg.seed)

    model, optimizer, scheduler, scaler, autocast_dtype = build_training(cfg, device)
    average = build_weight_average(cfg, model)  # None without ema_decay
    validated = average.module if average is not None else model
    state = TrainingState()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = restore_checkpoint(directory, model, optimizer, scheduler, scaler, average)
    resumed_at = state.next_epoch
    ddp_model = ray.train.torch.prepare_model(model, move_to_device=False)
    setup = training_setup(device, world, autocast_dtype)
    if rank == 0 and resumed_at == 0:
        _progress.info(f"training on {world} worker(s), {setup['device']}, DDP over {setup['ddp_backend']}, "
                       f"{'float16 autocast + GradScaler' if autocast_dtype is not None else 'float32'}")
    loss_fn = build_loss(cfg)
    contract = cfg.input_contract()
    train_shard = ray.train.get_dataset_shard(TRAIN_DATASET)
    clock = loop_config["epoch_clock"]

    for epoch in range(state.next_epoch, cfg.epochs):
        _maybe_inject_failure(loop_config.get("fail_once_at_epoch"), epoch, rank, world, loop_config.get("run_dir"))
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        set_epoch(clock, epoch)  # before iterating: the epoch's augmentation draw
        train_loss = train_one_epoch(ddp_model, train_shard, loss_fn, optimizer, scaler, cfg, device, autocast_dtype,
                                     after_step=None if average is None else lambda: average.update_parameters(model))
        trained_at = time.perf_counter()
        _sync_buffers_from_rank0(validated)
        metrics: dict[str, float] | None = None
        with tempfile.TemporaryDirectory() as tmp:
            overlays = Path(tmp) / OVERLAY_DIR if rank == 0 else None
            mine = iter_samples(loop_config["dataset_dirs"], VAL_SPLIT,
                                keep=lambda sample_id: owns_sample(sample_id, rank, world))
            val_loss, scored, overlay_paths = validate(validated, mine, contract, loss_fn, cfg, device, overlays)
            scheduler.step()
            if rank == 0:
                scores, val_metrics = score_validation(scored, cfg, overlay_paths)
                metrics = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, **val_metrics, "lr": lr,
                           "epoch_time_s": time.perf_counter() - started, "train_time_s": trained_at - started,
                           "resumed_at_epoch": resumed_at}
                state.epoch, state.history = epoch, [*state.history, metrics]
                save_checkpoint(tmp, validated, cfg.to_dict(), optimizer, scheduler, scaler, state, scores.rule,
                                trained=model if average is not None else None, setup=setup,
                                calibration=scores.calibration)
                # A logger, not print: Ray Train's patched print would show the line twice.
                _progress.info(format_epoch_line(metrics, cfg.epochs))
            metrics = _broadcast(metrics)
            if rank != 0:
                state.epoch, state.history = epoch, [*state.history, metrics]
            report_checkpoint = ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None
            ray.train.report(metrics, checkpoint=report_checkpoint)
        # Every rank holds the same history, so all stop together (report is a barrier).
        stale = epochs_without_improvement(state.history, cfg.best_metric, cfg.best_mode)
        if cfg.patience is not None and stale >= cfg.patience:
            if rank == 0:
                _progress.info(f"early stop after epoch {epoch + 1}: {cfg.best_metric} has not improved "
                               f"for {stale} epochs (patience {cfg.patience})")
            break


def build_training(cfg: TrainConfig, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any,
                                                                   torch.amp.GradScaler, torch.dtype | None]:
    """The model on ``device``, its optimiser, schedule and gradient scaler, and the dtype steps
    autocast to: float16 for ``mixed_precision`` on a GPU, else None (float32)."""
    model = build_model(cfg).to(device, memory_format=TRAINING_MEMORY_FORMAT)
    optimizer = build_optimizer(cfg, model)
    use_amp = cfg.mixed_precision and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    return model, optimizer, build_scheduler(cfg, optimizer), scaler, torch.float16 if use_amp else None


def training_setup(device: torch.device, world: int, autocast_dtype: torch.dtype | None) -> dict[str, Any]:
    """How this run trains, saved with each checkpoint: which device, DDP backend (Ray picks
    NCCL for GPU workers, gloo for CPU ones) and precision produced the weights."""
    return {"device": device.type, "ddp_backend": dist.get_backend() if dist.is_initialized() else "none",
            "workers": world, "mixed_precision": autocast_dtype is not None}


def score_validation(scored: SplitAccumulator, cfg: TrainConfig,
                     overlays: list[Path] = ()) -> tuple[SplitScores, dict[str, float]]:
    """Every rank's validation frames, merged, -> the rule calibrated on them and the ``val_*``
    metrics an epoch reports (overall, per defect class, overkill at the escape target, thresholds)."""
    scores = scored.finish(min_defect_area_px=cfg.min_defect_area_px, objective=cfg.objective(),
                           fallback=True, calibration_set={"split": "val"}, overlays=list(overlays))
    at_escape = scores.overkill_at_escape(cfg.metric_escape_target)
    return scores, {**{f"val_{k}": v for k, v in scores.overall_metrics().items()},
                    **per_class_image_metrics(scores.image_rows),
                    **({} if at_escape is None else {"val_overkill_at_escape": at_escape}),
                    "val_threshold": scores.rule.pixel_threshold,
                    "val_image_threshold": scores.rule.image_threshold}


PER_CLASS_IMAGE_METRICS = ("image_auroc", "overkill_rate", "escape_rate")


def per_class_image_metrics(image_rows: dict[str, dict[str, float]]) -> dict[str, float]:
    """``val_class_<class>_<metric>`` for the image-level rates of every defect class."""
    return {f"val_class_{re.sub(r'[^A-Za-z0-9_]+', '_', name)}_{key}": value
            for name, row in image_rows.items() if name != OVERALL
            for key, value in row.items() if key in PER_CLASS_IMAGE_METRICS}


def epochs_without_improvement(history: list[dict[str, float]], metric: str, mode: str) -> int:
    """Epochs reported since the best ``metric`` value (0: the last epoch is the best)."""
    values = [entry[metric] for entry in history]
    best = values.index(min(values) if mode == "min" else max(values))
    return len(values) - 1 - best


def format_epoch_line(metrics: dict[str, float], epochs: int) -> str:
    return (f"epoch {int(metrics['epoch']) + 1}/{epochs}  train_loss {metrics['train_loss']:.4f}  "
            f"val_loss {metrics['val_loss']:.4f}  MAE {metrics['val_mae']:.4f}  wF {metrics['val_weighted_f']:.4f}  "
            f"Sm {metrics['val_s_measure']:.4f}  mEm {metrics['val_mean_e']:.4f}  maxF {metrics['val_max_f']:.4f}  "
            f"escape {_rate(metrics.get('val_escape_rate'))}  overkill {_rate(metrics.get('val_overkill_rate'))}  "
            f"thr {metrics['val_threshold']:.3f}/{metrics['val_image_threshold']:.3f}  "
            f"({metrics['epoch_time_s']:.1f}s, training {metrics['train_time_s']:.1f}s)")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def train_one_epoch(model, shard, loss_fn, optimizer, scaler, cfg: TrainConfig, device,
                    autocast_dtype: torch.dtype | None,
                    after_step: Callable[[], None] | None = None) -> float:
    model.train()
    normalization = cfg.input_contract().normalization  # as validation and serving will feed the model
    total, count = 0.0, 0
    # drop_last: a 1-image batch breaks BatchNorm, and every DDP rank must step equally
    # often (Ray's training split gives each rank the same number of rows).
    for batch in shard.iter_batches(batch_size=cfg.batch_size, batch_format="numpy", drop_last=True):
        images, masks = (batch_tensor(array, device) for array in training_arrays(batch, normalization))
        loss = train_step(model, images, masks, loss_fn, optimizer, scaler, cfg.grad_clip_norm, autocast_dtype)
        if after_step is not None:
            after_step()
        total += loss.item() * len(images)
        count += len(images)
    total, count = _sum_across_ranks([total, count], device)
    if count == 0:
        raise ValueError(f"the train split gave no full batch of {cfg.batch_size} images per worker "
                         f"with {cfg.num_workers} workers; lower batch_size or num_workers")
    return total / count


def train_step(model, images: torch.Tensor, masks: torch.Tensor, loss_fn, optimizer, scaler,
               grad_clip_norm: float | None = None, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """One optimisation step on a batch (the loop's and the training benchmark's); returns the loss.
    ``autocast_dtype``: run the forward pass under autocast in that dtype (None: as the weights)."""
    images = images.contiguous(memory_format=TRAINING_MEMORY_FORMAT)  # as the model's weights
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(images.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        outputs = model(images, side_outputs=True)
    loss = loss_fn(outputs, masks)  # HybridLoss computes in float32
    scaler.scale(loss).backward()
    if grad_clip_norm is not None:  # a rare huge gradient (a faint defect's first hit) cannot undo training
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
    scaler.step(optimizer)
    scaler.update()
    return loss


def owns_sample(sample_id: str, rank: int, world: int) -> bool:
    """Validation sharding by a stable hash of the id: every image scored exactly once,
    whatever order Ray Data delivers rows in."""
    return zlib.crc32(sample_id.encode()) % world == rank


@torch.inference_mode()
def validate(model, samples: Iterable[Sample], contract, loss_fn, cfg: TrainConfig, device,
             overlay_dir: Path | None) -> tuple[float, SplitAccumulator | None, list[Path]]:
    """``samples`` (this rank's hash share of the validation frames, see :func:`owns_sample`)
    through the input contract, scored here.

    Runs the unwrapped model in float32 (no autocast), like ``evaluate``. Returns the mean
    loss over all ranks' model inputs, on rank 0 the merged accumulator of every rank (else
    None), and the overlays written to ``overlay_dir`` (rank 0's own frames).
    """
    model.eval()
    total, count = 0.0, 0

    def predict(inputs: np.ndarray, masks: np.ndarray) -> np.ndarray:
        nonlocal total, count
        outputs = model(batch_tensor(inputs, device), side_outputs=True)
        total += loss_fn(outputs, batch_tensor(masks, device)).item() * len(inputs)
        count += len(inputs)
        return probability_maps(outputs[0])

    scored, overlays = SplitAccumulator(per_class=True), []
    kept: dict[str, np.ndarray] = {}  # maps stay on their rank, and only for the area rule
    for sample, probability in predict_frames(samples, contract, predict, batch_size=cfg.validation_batch,
                                              mask_of=lambda sample: sample.mask):
        scored.add(str(sample.id), str(sample.defect_class), probability, sample.mask)
        if cfg.min_defect_area_px:
            kept[str(sample.id)] = probability
        if overlay_dir is not None and len(overlays) < cfg.num_overlays:
            overlays.extend(overlay_of(sample, probability, overlay_dir, len(overlays)))
    total, count = _sum_across_ranks([total, count], device)
    if count == 0:
        raise ValueError("the validation split is empty")
    if cfg.min_defect_area_px:  # regions at the pooled pixel threshold, which needs every rank's histogram
        pooled = SplitAccumulator()
        for part in _all_gather(scored.calibrator):
            pooled.calibrator.merge(part)
        scored.measure_regions(kept.__getitem__, pooled.pixel_threshold())
    parts = _gather_to_rank0(scored)
    if not parts:  # not rank 0
        return total / count, None, []
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    return total / count, merged, overlays


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _sum_across_ranks(values: list[float], device) -> list[float]:
    if not _distributed():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def _sync_buffers_from_rank0(model: torch.nn.Module) -> None:
    """Give every rank rank 0's BatchNorm running statistics (each rank updated its own in
    its last forward pass), so all validate exactly the model that rank 0 checkpoints."""
    if not _distributed():
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def _gather_to_rank0(value: Any) -> list[Any]:
    """Every rank's ``value`` on rank 0 (rank order); [] elsewhere."""
    if not _distributed():
        return [value]
    gathered: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(value, gathered, dst=0)
    return gathered or []


def _all_gather(value: Any) -> list[Any]:
    if not _distributed():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def _broadcast(metrics: dict[str, float] | None) -> dict[str, float]:
    if not _distributed():
        return metrics
    box = [metrics]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def fail_once_epoch(epochs: int) -> int | None:
    """The epoch ``FAIL_ONCE_ENV`` names (None: unset), checked against the run's ``epochs``."""
    text = os.environ.get(FAIL_ONCE_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) >= epochs:
        raise ValueError(f"{FAIL_ONCE_ENV} must be an epoch index in [0, {epochs}), got {text!r}")
    return int(text)


def _maybe_inject_failure(fail_at: int | None, epoch: int, rank: int, world: int, run_dir: str | None) -> None:
    """Testing aid (``FAIL_ONCE_ENV``): the last rank raises once at ``fail_at``; a marker
    file in the run directory makes the restarted worker group carry on."""
    if fail_at != epoch or rank != world - 1 or run_dir is None:
        return
    marker = Path(run_dir) / f"injected_failure_epoch_{epoch}"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    if epoch > 0:
        _wait_for_registered_epoch(Path(run_dir), epoch - 1)
    raise InjectedFailure(f"injected failure on rank {rank} at epoch {epoch} ({FAIL_ONCE_ENV})")


# Ray Train's controller records every checkpoint it has registered in this file of the run folder.
_CHECKPOINT_SNAPSHOT = "checkpoint_manager_snapshot.json"


def _wait_for_registered_epoch(run_dir: Path, epoch: int, timeout_s: float = 60.0) -> None:
    """Block until the controller has registered ``epoch``'s checkpoint (or ``timeout_s`` passed).

    ``ray.train.report`` returns before the controller has polled the result: a failure raised
    at once can reach it first, and the restarted group then starts from scratch (a flaky test).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            snapshot = json.loads((run_dir / _CHECKPOINT_SNAPSHOT).read_text())
            if any(entry.get("metrics", {}).get("epoch") == epoch for entry in snapshot.get("checkpoint_results", [])):
                return
        except (OSError, ValueError, AttributeError):
            pass  # not written yet, or caught mid-write
        time.sleep(0.1)
    _progress.warning(f"epoch {epoch}'s checkpoint was not registered within {timeout_s:.0f} s; failing anyway")
