"""Full-size learning curve: the default JAFFNet (ResNet-18, width 1.0, 256x256) trained on one
GPU on hard synthetic frames, validated every epoch, then scored once on fresh test frames.

    # on a GPU machine (no Ray or MLflow needed there): fits its epochs into --minutes
    python benchmarks/full_size_curve.py train --out results --minutes 6 [--frames 4000] [--set key=value]
    # here: record the curve as an MLflow run (metrics per epoch, the PNG, the config) and redraw it
    python benchmarks/full_size_curve.py log results [--tracking-uri URI]

It trains with what ``jaffnet train`` trains with: the packaged config (plus ``--set``), the
model, loss, optimiser and schedule factories, the augmentation, one epoch's training step
(float16 autocast + GradScaler on a GPU) and the validation scoring (rule calibrated on the
validation frames, per-class image AUROC). Only Ray's data sharding and the checkpoints are left
out, so that one script runs on a bare GPU machine. Frames are drawn with ``jaffnet synth``'s
generator (one RNG per frame index, so a seed gives the same frames on any machine) by a pool of
spawned processes, the training frames into a memory-mapped scratch file the pool augments from.

Writes to OUT: ``curve.jsonl`` (one line per epoch, flushed as it goes), ``summary.json`` (config,
device, throughput, the test split's metrics against the all-background map) and
``learning_curve.png``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a bare checkout, not installed

from jaffnet.decision import DecisionRule  # noqa: E402
from jaffnet.metrics import LOWER_IS_BETTER, METRIC_COLUMNS  # noqa: E402
from jaffnet.preprocess import to_rgb  # noqa: E402
from pipelines.data.augment import augment_pair, sample_rng  # noqa: E402
from pipelines.data.dataset import Sample  # noqa: E402
from pipelines.data.synth import draw_sample, sample_id  # noqa: E402
from pipelines.evaluation.scoring import SplitAccumulator  # noqa: E402
from pipelines.training.config import TrainConfig, load_config  # noqa: E402

CURVE, SUMMARY, PLOT = "curve.jsonl", "summary.json", "learning_curve.png"
EXPERIMENT = "jaffnet-full-size-curve"
PLOTTED = ("mae", "weighted_f", "s_measure", "mean_e", "max_f")
_STORE: np.ndarray | None = None  # in a pool process: the training frames, memory-mapped


def _attach(path: str) -> None:
    """Pool process start: OpenCV single-threaded (many processes share the cores), the frame store
    mapped. Processes are spawned, not forked: a forked child of a process with threads (Ray's, a
    GPU runtime's) can deadlock on a lock one of them held."""
    import cv2

    global _STORE
    cv2.setNumThreads(1)
    _STORE = np.load(path, mmap_mode="r+")


def _draw(args: tuple[int, int, int, str]) -> Sample:
    index, seed, size, difficulty = args
    drawn = draw_sample(size, np.random.default_rng([seed, index]), difficulty=difficulty)
    image = to_rgb(drawn.image)
    return Sample(sample_id(index), drawn.defect_class, image, drawn.mask, size, size)


def draw_frames(count: int, first: int, seed: int, size: int, difficulty: str, pool) -> list[Sample]:
    jobs = [(index, seed, size, difficulty) for index in range(first, first + count)]
    return pool.map(_draw, jobs, chunksize=16)


def _draw_into_store(args: tuple[int, int, int, str]) -> None:
    """Training frame ``index`` into the store: RGB in channels 0-2, the mask in channel 3."""
    sample = _draw(args)
    _STORE[args[0], ..., :3] = sample.image
    _STORE[args[0], ..., 3] = sample.mask


def _augmented(args: tuple[list[int], int, int, Any, str]) -> dict[str, np.ndarray]:
    indices, epoch, seed, config, input_mode = args
    images, masks = [], []
    for index in indices:
        frame = np.asarray(_STORE[index])
        image, mask = augment_pair(frame[..., :3], frame[..., 3], frame.shape[0],
                                   sample_rng(seed, epoch, sample_id(index)), config, input_mode)
        images.append(to_rgb(image))
        masks.append(mask)
    return {"image": np.stack(images), "mask": np.stack(masks)}


class StoredShard:
    """What ``train_one_epoch`` reads from a Ray Train dataset shard (``iter_batches``), over the
    training frames in the store, augmented in the pool: a fresh shuffle and augmentation draw per epoch."""

    def __init__(self, pool, count: int, cfg: TrainConfig) -> None:
        self.pool, self.count, self.cfg, self.epoch = pool, count, cfg, 0

    def iter_batches(self, batch_size: int, batch_format: str = "numpy", drop_last: bool = True):
        order = np.random.default_rng([self.cfg.seed, self.epoch]).permutation(self.count)
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        jobs = [(order[i:i + batch_size].tolist(), self.epoch, self.cfg.seed, self.cfg.augment, self.cfg.input_mode)
                for i in range(0, stop, batch_size)]
        yield from self.pool.imap(_augmented, jobs)


def _probe_seconds_per_step(cfg: TrainConfig, device, steps: int = 12) -> float:
    """Seconds per training step of the real model, loss and optimiser on random batches."""
    import torch

    from pipelines.training.factory import build_loss
    from pipelines.training.loop import build_training, train_step

    model, optimizer, _, scaler, autocast_dtype = build_training(cfg, device)
    loss_fn = build_loss(cfg)
    images = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=device)
    masks = (torch.rand(cfg.batch_size, 1, cfg.image_size, cfg.image_size, device=device) > 0.9).float()
    started = 0.0
    for step in range(steps):
        if step == 2:  # after cuDNN's algorithm search
            _synchronise(device)
            started = time.perf_counter()
        train_step(model, images, masks, loss_fn, optimizer, scaler, cfg.grad_clip_norm, autocast_dtype)
    _synchronise(device)
    return (time.perf_counter() - started) / (steps - 2)


def _synchronise(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _beats_background(model: dict[str, float], baseline: dict[str, float]) -> list[str]:
    return [m for m in METRIC_COLUMNS
            if (model[m] < baseline[m] if m in LOWER_IS_BETTER else model[m] > baseline[m])]


def _plan_epochs(cfg: TrainConfig, shard: StoredShard, val: list[Sample], device, args: argparse.Namespace,
                 started: float) -> tuple[int, dict[str, Any], dict[str, float]]:
    """How many epochs fit the budget, from timed probes; also the untrained model's validation
    metrics and the probes' timings."""
    import torch

    from pipelines.training.factory import build_loss, build_model
    from pipelines.training.loop import score_validation, validate

    step_s = _probe_seconds_per_step(cfg, device)
    tick = time.perf_counter()
    batches = sum(1 for _ in zip(range(8), shard.iter_batches(cfg.batch_size)))
    augment_s = (time.perf_counter() - tick) / max(1, batches)
    torch.manual_seed(cfg.seed)
    tick = time.perf_counter()
    val_loss, scored, _ = validate(build_model(cfg).to(device), val, cfg.input_contract(), build_loss(cfg), cfg,
                                   device, None)
    _, untrained = score_validation(scored, cfg)
    validate_s = time.perf_counter() - tick
    epoch_s = shard.count // cfg.batch_size * max(step_s, augment_s) + validate_s
    left = args.minutes * 60 - (time.perf_counter() - started) - validate_s * args.test_frames / len(val)
    epochs = max(1, min(args.max_epochs, int(left // (epoch_s * 1.1))))
    print(f"{device}: {step_s * 1000:.0f} ms per training step of {cfg.batch_size} (augmentation "
          f"{augment_s * 1000:.0f} ms per batch on {args.workers} processes), validation {validate_s:.1f} s "
          f"-> {epochs} epochs of ~{epoch_s:.0f} s in the {args.minutes:g}-minute budget", flush=True)
    return (epochs, {"epoch": -1, "val_loss": val_loss, **untrained, "lr": 0.0},
            {"seconds_per_step": step_s, "augment_seconds_per_batch": augment_s, "validate_s": validate_s})


def _fit(cfg: TrainConfig, shard: StoredShard, val: list[Sample], device, curve: Path,
         history: list[dict[str, Any]]):
    """Train ``cfg.epochs`` epochs, validating each; every epoch's metrics appended to ``curve`` at once.
    Returns the model and the last epoch's validation scores (its calibrated rule)."""
    import torch

    from pipelines.training.factory import build_loss
    from pipelines.training.loop import build_training, format_epoch_line, score_validation, train_one_epoch, validate

    torch.manual_seed(cfg.seed)
    model, optimizer, scheduler, scaler, autocast_dtype = build_training(cfg, device)
    loss_fn, contract = build_loss(cfg), cfg.input_contract()
    scores = None
    for epoch in range(cfg.epochs):
        tick = time.perf_counter()
        shard.epoch, lr = epoch, optimizer.param_groups[0]["lr"]
        train_loss = train_one_epoch(model, shard, loss_fn, optimizer, scaler, cfg, device, autocast_dtype)
        trained_at = time.perf_counter()
        val_loss, scored, _ = validate(model, val, contract, loss_fn, cfg, device, None)
        scores, val_metrics = score_validation(scored, cfg)
        scheduler.step()
        metrics = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, **val_metrics, "lr": lr,
                   "epoch_time_s": time.perf_counter() - tick, "train_time_s": trained_at - tick}
        history.append(metrics)
        with curve.open("a") as file:
            file.write(json.dumps(metrics) + "\n")
        print(format_epoch_line(metrics, cfg.epochs) + f"  AUROC {metrics['val_image_auroc']:.3f}", flush=True)
    return model, scores


def _test(model, cfg: TrainConfig, test: list[Sample], rule: DecisionRule, device) -> dict[str, Any]:
    """The model on fresh frames at ``rule``, next to the all-background map on the same frames."""
    from pipelines.training.factory import build_loss
    from pipelines.training.loop import validate

    _, scored, _ = validate(model, test, cfg.input_contract(), build_loss(cfg), cfg, device, None)
    blank = SplitAccumulator()
    for sample in test:
        blank.add(str(sample.id), str(sample.defect_class), np.zeros(sample.mask.shape, np.float32), sample.mask)
    tested = scored.finish(rule=rule).overall_metrics()
    baseline = blank.finish(rule=DecisionRule(pixel_threshold=0.5, image_threshold=0.5)).overall_metrics()
    return {"test": tested, "test_all_background": baseline,
            "test_beats_background": _beats_background(tested, baseline),
            "test_rule": {"pixel_threshold": rule.pixel_threshold, "image_threshold": rule.image_threshold}}


def train(args: argparse.Namespace) -> int:
    import torch

    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(None, overrides=[f"image_size={args.size}", "num_workers=1", *args.overrides])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    if device.type == "cpu":
        torch.set_num_threads(max(1, args.threads))

    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="jaffnet-curve-") as scratch:
        store = Path(scratch) / "train_frames.npy"  # on disk, not in memory: any number of frames
        np.lib.format.open_memmap(store, mode="w+", dtype=np.uint8, shape=(args.frames, args.size, args.size, 4))
        with spawn.Pool(args.workers, initializer=_attach, initargs=(str(store),)) as pool:
            pool.map(_draw_into_store, [(i, args.seed, args.size, args.difficulty) for i in range(args.frames)],
                     chunksize=16)
            val = draw_frames(args.val_frames, args.frames, args.seed, args.size, args.difficulty, pool)
            test = draw_frames(args.test_frames, args.frames + args.val_frames, args.seed, args.size,
                               args.difficulty, pool)
            drawn_s = time.perf_counter() - started
            print(f"drew {args.frames} train, {len(val)} val, {len(test)} test frames ({args.size} px, "
                  f"{args.difficulty}) in {drawn_s:.1f} s", flush=True)

            shard = StoredShard(pool, args.frames, cfg)
            epochs, untrained, probes = _plan_epochs(cfg, shard, val, device, args, started)
            cfg = shard.cfg = cfg.replaced(epochs=epochs, warmup_epochs=min(cfg.warmup_epochs, max(0, epochs - 1)))
            history = [untrained]  # epoch 0 on the plot
            (out / CURVE).write_text(json.dumps(untrained) + "\n")
            model, scores = _fit(cfg, shard, val, device, out / CURVE, history)

    summary = {
        "config": cfg.to_dict(), "frames": {"train": args.frames, "val": len(val), "test": len(test)},
        "difficulty": args.difficulty, "seed": args.seed, "device": _device_name(device),
        "torch": torch.__version__, "python": platform.python_version(), **probes, "draw_s": drawn_s,
        "epochs": epochs, **_test(model, cfg, test, scores.rule, device), "wall_s": time.perf_counter() - started,
    }
    (out / SUMMARY).write_text(json.dumps(summary, indent=1))
    tested, baseline = summary["test"], summary["test_all_background"]
    print(f"test ({len(test)} fresh frames, the last epoch's validation rule): image AUROC "
          f"{tested['image_auroc']:.3f} [{tested['image_auroc_low']:.3f}, {tested['image_auroc_high']:.3f}], "
          f"MAE {tested['mae']:.4f} ({tested['mae'] / baseline['mae']:.3f}x all-background), beats all-background "
          f"on {len(summary['test_beats_background'])}/{len(METRIC_COLUMNS)} metrics; "
          f"{summary['wall_s'] / 60:.1f} min in all", flush=True)
    draw_curve(history, summary, out / PLOT)
    return 0


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from benchmarks.recipe import cpu_name

    return cpu_name()


def read_results(folder: Path) -> tuple[list[dict[str, float]], dict[str, Any]]:
    history = [json.loads(line) for line in (folder / CURVE).read_text().splitlines() if line.strip()]
    summary_file = folder / SUMMARY
    return history, json.loads(summary_file.read_text()) if summary_file.is_file() else {}


def draw_curve(history: list[dict[str, float]], summary: dict[str, Any], path: Path) -> Path:
    from pipelines.evaluation.report import _pyplot

    plt = _pyplot()
    epochs = [int(entry["epoch"]) + 1 for entry in history]  # 0: the untrained model
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    trained = [(e, entry) for e, entry in zip(epochs, history) if "train_loss" in entry]
    axes[0].plot([e for e, _ in trained], [entry["train_loss"] for _, entry in trained], "o-", label="train")
    axes[0].plot(epochs, [entry["val_loss"] for entry in history], "o-", label="validation")
    axes[0].set(title="hybrid loss (5 side outputs)", xlabel="epoch", yscale="log")
    for metric in PLOTTED:
        axes[1].plot(epochs, [entry[f"val_{metric}"] for entry in history], "o-", label=METRIC_COLUMNS[metric])
    axes[1].set(title="validation saliency metrics", xlabel="epoch", ylim=(0, 1))
    auroc = [entry.get("val_image_auroc") for entry in history]
    low = [entry.get("val_image_auroc_low") for entry in history]
    high = [entry.get("val_image_auroc_high") for entry in history]
    axes[2].plot(epochs, auroc, "o-", color="tab:red", label="image AUROC")
    if all(v is not None for v in low + high):
        axes[2].fill_between(epochs, low, high, color="tab:red", alpha=0.15, label="95 % interval")
    axes[2].set(title="validation image AUROC", xlabel="epoch", ylim=(0.4, 1.0))
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    frames = summary.get("frames", {})
    cfg = summary.get("config", {})
    fig.suptitle(f"JAFFNet width {cfg.get('width', '?')}, ResNet-{cfg.get('encoder_depth', '?')}, "
                 f"{cfg.get('image_size', '?')} px, {summary.get('difficulty', '?')} synthetic frames "
                 f"({frames.get('train', '?')} train / {frames.get('val', '?')} val) on "
                 f"{summary.get('device', '?')}; epoch 0 = untrained", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log(args: argparse.Namespace) -> int:
    import mlflow

    from pipelines.registry import default_tracking_uri

    folder = Path(args.results)
    history, summary = read_results(folder)
    plot = draw_curve(history, summary, folder / PLOT)
    mlflow.set_tracking_uri(args.tracking_uri or default_tracking_uri())
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=args.run_name) as run:
        if summary:
            mlflow.log_params(TrainConfig.from_dict(summary["config"]).params())
            mlflow.set_tags({"device": summary["device"], "torch": summary["torch"],
                             "difficulty": summary["difficulty"], "frames": json.dumps(summary["frames"])})
            mlflow.log_metrics({f"test_{k}": v for k, v in summary["test"].items() if v is not None})
        for entry in history:
            step = int(entry["epoch"]) + 1  # step 0: the untrained model
            mlflow.log_metrics({k: v for k, v in entry.items() if k != "epoch" and v is not None}, step=step)
        mlflow.log_artifact(str(plot))
        for name in (CURVE, SUMMARY):
            if (folder / name).is_file():
                mlflow.log_artifact(str(folder / name))
    print(f"logged {len(history)} epochs to MLflow run {run.info.run_id} (experiment {EXPERIMENT}); curve: {plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("train", help="train and validate per epoch (on a GPU machine)")
    run.add_argument("--out", required=True)
    run.add_argument("--minutes", type=float, default=6.0, help="budget for drawing, training and testing")
    run.add_argument("--frames", type=int, default=4000, help="training frames")
    run.add_argument("--val-frames", type=int, default=500)
    run.add_argument("--test-frames", type=int, default=1000)
    run.add_argument("--size", type=int, default=256, help="frame side (= the model's image_size)")
    run.add_argument("--difficulty", default="hard", choices=("easy", "hard"))
    run.add_argument("--seed", type=int, default=7)
    run.add_argument("--max-epochs", type=int, default=60)
    run.add_argument("--workers", type=int, default=max(1, (multiprocessing.cpu_count() or 2) - 2),
                     help="processes drawing and augmenting frames")
    run.add_argument("--threads", type=int, default=2, help="torch threads on a CPU")
    run.add_argument("--set", dest="overrides", action="append", default=[], help="training config key=value")
    record = commands.add_parser("log", help="record a results folder as an MLflow run and draw its curve")
    record.add_argument("results")
    record.add_argument("--tracking-uri")
    record.add_argument("--run-name", default="full-size-curve")
    args = parser.parse_args(argv)
    return train(args) if args.command == "train" else log(args)


if __name__ == "__main__":
    sys.exit(main())
