"""``jaffnet train``, ``jaffnet demo`` and ``jaffnet bench train`` (``jaffnet evaluate`` is defined in cli/evaluate.py)."""

from __future__ import annotations

import argparse
import sys

from pipelines.cli_options import add_tracking_uri


def add_commands(subparsers, bench_subparsers) -> None:
    train = subparsers.add_parser(
        "train", help="train JAFFNet with Ray Train DDP, log to MLflow, register the best model",
        description="Train on an ingested dataset. Config: the packaged defaults, then --config, then --set.")
    train.add_argument("--data", action="append", metavar="DATASET",
                       help="ingested dataset (from `jaffnet ingest`): a folder or s3://bucket/prefix; repeat it to "
                            "train on several (e.g. --data base --data line: the union of their train splits, "
                            "validated on that of their val splits)")
    _add_config_arguments(train)
    train.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    train.add_argument("--resume", action="store_true",
                       help="continue the run named by --run-name (default: the newest) from its last checkpoint")
    train.add_argument("--run-name", help="Ray Train run name (default: a fresh unique name)")
    train.add_argument("--promote", action="store_true",
                       help="make the new version the champion even if it does not beat the current one")
    add_tracking_uri(train)
    train.set_defaults(func=train_command)

    bench = bench_subparsers.add_parser(
        "train", help="memory of a long tiny training run: Ray processes' RSS at epoch 5 vs the last epoch")
    bench.add_argument("--epochs", type=int, default=40, help="epochs of the tiny run (default 40)")
    bench.add_argument("--count", type=int, default=64, help="synthetic frames (default 64)")
    bench.set_defaults(func=bench_train_command)

    demo = subparsers.add_parser(
        "demo", help="end to end on 2 CPU cores: synth -> ingest -> train -> register -> evaluate")
    demo.add_argument("--out", default="demo_out", help="working folder for the dataset and checkpoints")
    demo.add_argument("--count", type=int, default=None,
                      help="synthetic images split 70/15/15 (default 640; 1280 with --difficulty hard)")
    demo.add_argument("--extra-test-frames", type=int, default=None,
                      help="more synthetic images for the test split only (default 1024): its AUROC and rates "
                           "need hundreds of frames to be told apart from luck")
    demo.add_argument("--difficulty", choices=("easy", "hard"), default="easy",
                      help="easy (default): no faint defects; hard: a quarter of the defects at 0.3x contrast, "
                           "trained with demo_hard.yaml's keys over demo.yaml's")
    _add_config_arguments(demo)
    add_tracking_uri(demo)
    demo.set_defaults(func=demo_command)


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with any subset of the config keys")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key (repeatable), e.g. --set width=0.25 --set dilation_rates=[1,3,5]")


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def train_command(args) -> int:
    from pipelines.training.config import dump_config, load_config

    try:
        cfg = load_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as exc:
        return _fail(str(exc))
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    if not args.data:
        return _fail("--data DATASET is required (an ingested dataset directory; repeatable)")
    from pipelines.data.dataset import dataset_list

    try:
        data = dataset_list(args.data)  # before Ray starts: a missing or repeated dataset fails now
    except (ValueError, FileNotFoundError) as exc:
        return _fail(str(exc))
    from pipelines.registry import configure_tracking
    from pipelines.runtime import init_ray
    from pipelines.training.reporting import print_training_summary
    from pipelines.training.run import train

    configure_tracking(args.tracking_uri)
    init_ray()  # joins the cluster at RAY_ADDRESS (ray job submit) or starts a local one
    try:
        outcome = train(cfg, data, run_name=args.run_name, resume=args.resume, promote=args.promote)
    except (ValueError, FileNotFoundError, LookupError) as exc:
        return _fail(str(exc))
    print_training_summary(outcome)
    return 0


def demo_command(args) -> int:
    from pipelines.training.demo import run_demo

    try:
        extra = {} if args.extra_test_frames is None else {"extra_test_frames": args.extra_test_frames}
        run_demo(args.out, count=args.count, config_path=args.config, overrides=args.overrides,
                 tracking_uri=args.tracking_uri, difficulty=args.difficulty, **extra)
    except (ValueError, FileNotFoundError, LookupError) as exc:
        return _fail(str(exc))
    return 0


def bench_train_command(args) -> int:
    from pipelines.training.bench import bench_train

    try:
        return bench_train(args.epochs, args.count)
    except (ValueError, FileNotFoundError) as exc:
        return _fail(str(exc))
