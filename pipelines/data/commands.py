"""CLI: ``jaffnet synth``, ``jaffnet ingest`` and ``jaffnet bench data``."""

from __future__ import annotations

import argparse
import sys

from pipelines.cli_options import add_log_selection, positive_float
from pipelines.data.defects import DIFFICULTIES
from pipelines.data.layouts import FORMATS
from pipelines.data.textures import TEXTURES

DECISION_LOG = "decision-log"  # pipelines.data.reviewed_frames.SOURCE_FORMAT (that module loads numpy, cv2)

_SHOWN_REJECTIONS = 20


def add_commands(subparsers, bench_subparsers) -> None:
    synth = subparsers.add_parser("synth", help="generate the built-in synthetic defect dataset")
    synth.add_argument("--out", required=True, help="folder to write images/, masks/, classes.csv")
    synth.add_argument("--count", type=int, default=500)
    synth.add_argument("--size", type=int, default=256, help="frame side in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--difficulty", choices=tuple(DIFFICULTIES), default="hard",
                       help="hard: a quarter of the defects faint, like the real data; easy: none faint, "
                            "1.5x contrast (the demo's setting)")
    synth.add_argument("--textures", type=lambda text: [t.strip() for t in text.split(",")], metavar="NAME[,NAME]",
                       help=f"backgrounds only from these bundled textures (default: all of {', '.join(TEXTURES)}); "
                            "e.g. train on some and test on the others")
    synth.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    synth.set_defaults(func=run_synth)

    ingest = subparsers.add_parser(
        "ingest", help="convert a dataset download (Ray Data) or a decision log's reviewed frames into Parquet",
        description="--format decision-log reads the reviewed frames of an endpoint's decision log (its folder, "
                    "decision_log.folder): OK verdicts with empty masks, NG verdicts with the operator's boxes or the "
                    "model's mask the operator confirmed; the line is the class. Rejected and unreviewed decisions "
                    "are counted, not fatal.")
    ingest.add_argument("src", help="the dataset folder, in its original layout, or the decision log folder")
    ingest.add_argument("--format", required=True, choices=(*FORMATS, DECISION_LOG), dest="source_format")
    ingest.add_argument("--out", required=True,
                        help="dataset folder to create, or s3://bucket/prefix (credentials from AWS_* variables)")
    ingest.add_argument("--seed", type=int, default=0, help="seed of the split assignment")
    ingest.add_argument("--val-fraction", type=float, default=0.15)
    ingest.add_argument("--test-fraction", type=float, default=0.15,
                        help="ignored for samples with an official split (DAGM)")
    ingest.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    ingest.add_argument("--strict", action="store_true",
                        help="fail (exit 1, write nothing) if any file is rejected")
    ingest.add_argument("--num-cpus", type=positive_float, default=0.5, help="CPUs per decode task")
    ingest.add_argument("--bit-depth", type=int, choices=range(9, 17), metavar="9..16",
                        help="significant bits of 16-bit images without a PNG sBIT chunk (default: inferred "
                             "from each image's maximum, as the endpoint does)")
    add_log_selection(ingest)  # --line, --since, --until: --format decision-log only
    ingest.set_defaults(func=run_ingest)

    bench = bench_subparsers.add_parser("data", help="decode+augment throughput: Ray Data vs a plain loop")
    bench.add_argument("--dataset", default=None, help="an ingested dataset (default: synthesize one)")
    bench.add_argument("--count", type=int, default=128, help="synthetic frames when no --dataset")
    bench.add_argument("--size", type=int, default=256, help="training image size")
    bench.add_argument("--batch-size", type=int, default=64, help="rows per Ray Data block and task")
    bench.add_argument("--epochs", type=int, default=3, help="Ray Data epochs (the first starts its workers)")
    bench.add_argument("--num-cpus", type=positive_float, default=0.5, help="CPUs per Ray Data task")
    bench.set_defaults(func=run_bench)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_synth(args: argparse.Namespace) -> int:
    from pipelines.data.synth import synthesize

    try:
        summary = synthesize(args.out, args.count, args.size, args.seed, difficulty=args.difficulty,
                             textures=args.textures, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as exc:
        return _error(str(exc))
    classes = ", ".join(f"{name} {n}" for name, n in sorted(summary.classes.items()))
    print(f"wrote {summary.count} frames of {summary.size}x{summary.size} ({summary.difficulty}) to {summary.out_dir} "
          f"in {summary.seconds:.2f} s ({summary.images_per_s:.0f} images/s)")
    print(f"classes: {classes}")
    print(f"textures: {', '.join(f'{name} {n}' for name, n in sorted(summary.textures.items()))}")
    return 0


def _print_rejections(rejected: list[dict], what: str = "files") -> None:
    if not rejected:
        return
    print(f"rejected {len(rejected)} {what}:")
    for item in rejected[:_SHOWN_REJECTIONS]:
        print(f"  {item['file']}: {item['reason']}")
    if len(rejected) > _SHOWN_REJECTIONS:
        print(f"  ... and {len(rejected) - _SHOWN_REJECTIONS} more (see manifest.json)")


def format_counts(manifest: dict) -> str:
    classes = sorted({name for split in manifest["counts"].values() for name in split})
    width = max([len("class")] + [len(name) for name in classes])
    splits = list(manifest["counts"])
    lines = [f"{'class':<{width}} " + " ".join(f"{s:>6}" for s in splits)]
    for name in classes:
        lines.append(f"{name:<{width}} " + " ".join(f"{manifest['counts'][s].get(name, 0):>6}"
                                                     for s in splits))
    lines.append(f"{'total':<{width}} " + " ".join(f"{manifest['totals'][s]:>6}" for s in splits))
    return "\n".join(lines)


def run_ingest(args: argparse.Namespace) -> int:
    from pipelines.data.ingestion import IngestError
    from pipelines.data.layouts import SourceError

    selection = [flag for flag, value in (("--line", args.line), ("--since", args.since), ("--until", args.until))
                 if value is not None]
    if args.source_format != DECISION_LOG and selection:
        return _error(f"{', '.join(selection)} select decisions of a log: only with --format {DECISION_LOG}")
    what = "reviewed decisions" if args.source_format == DECISION_LOG else "files"
    try:
        result = _ingest(args)
    except IngestError as exc:
        _print_rejections(exc.rejected, what)
        print(f"error: {exc}", file=sys.stderr)
        return 1 if exc.rejected else 2
    except (SourceError, FileNotFoundError, ValueError) as exc:
        return _error(str(exc))
    manifest = result.manifest
    print(f"ingested {manifest['num_samples']} samples ({args.source_format}) into "
          f"{result.dataset_dir} in {manifest['seconds']:.1f} s")
    print(format_counts(manifest))
    _print_rejections(manifest["rejected"], what)
    if "num_unreviewed" in manifest:
        print(f"{manifest['num_unreviewed']} decisions in the selection were not reviewed (not ingested)")
    return 0


def _ingest(args: argparse.Namespace):
    common = {"seed": args.seed, "val_fraction": args.val_fraction, "test_fraction": args.test_fraction,
              "overwrite": args.overwrite, "strict": args.strict}
    if args.source_format == DECISION_LOG:  # one SQLite file, read in this process: no Ray
        from pipelines.data.reviewed_frames import ingest_decision_log

        return ingest_decision_log(args.src, args.out, line=args.line, since=args.since, until=args.until, **common)
    from pipelines.data.ingestion import ingest
    from pipelines.runtime import init_ray

    init_ray(include_dashboard=False, log_to_driver=False)
    return ingest(args.src, args.out, args.source_format, num_cpus=args.num_cpus, bit_depth=args.bit_depth, **common)


def run_bench(args: argparse.Namespace) -> int:
    from pipelines.data.bench import bench_data
    from pipelines.runtime import init_ray

    init_ray(include_dashboard=False, log_to_driver=False)
    try:
        result = bench_data(args.dataset, count=args.count, image_size=args.size,
                            batch_size=args.batch_size, epochs=args.epochs, num_cpus=args.num_cpus)
    except (FileNotFoundError, ValueError) as exc:
        return _error(str(exc))
    print(result.report())
    return 0
