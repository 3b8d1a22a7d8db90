"""``jaffnet evaluate``: a model (``--model``) or a live endpoint (``--endpoint``) scored on a dataset split.

The command is defined here, whole, because its two sources live in different layers:
``--model`` runs ``pipelines.evaluation``, ``--endpoint`` serving's site acceptance test
(``serving.acceptance``). Only the composition root may import both (pipelines never
imports serving), so neither package has to reach into the other's parser.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.cli_options import add_tracking_uri
from serving.commands import KEY_FILE_HELP


def add_commands(subparsers, bench_subparsers) -> None:
    evaluate = subparsers.add_parser(
        "evaluate", help="saliency and image-level OK/NG metrics of a model (or a live endpoint) on a dataset split",
        description="Score a model with its own input contract and calibrated decision rule, per defect class "
                    "and overall. With --endpoint, post every frame of the split to a running endpoint at its "
                    "own size and score its answers the same way (a site acceptance test).")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--model",
                        help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model or a saved model directory")
    source.add_argument("--endpoint", metavar="URL", help="a running inspection endpoint, e.g. http://127.0.0.1:8000")
    evaluate.add_argument("--data", required=True, help="ingested dataset: a folder or s3://bucket/prefix")
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"))
    evaluate.add_argument("--batch-size", type=int, default=8, help="model inputs per forward (--model)")
    evaluate.add_argument("--concurrency", type=int, default=4, help="requests in flight (--endpoint)")
    evaluate.add_argument("--json", metavar="FILE", help="also write the numbers as JSON ('-' for stdout)")
    evaluate.add_argument("--out", metavar="DIR",
                          help="also write a report folder: frames.csv (one row per frame), roc.png, pr.png, "
                               "score_histogram.png and the operating table (overkill at escape 0/1/5 %% "
                               "with 95 %% upper bounds, per class and overall) as .txt and .json")
    add_tracking_uri(evaluate)
    evaluate.add_argument("--key-file", help=KEY_FILE_HELP + " (--endpoint; an admin key: it reads the model "
                                                             "card and posts frames)")
    evaluate.set_defaults(func=evaluate_command)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def evaluate_command(args) -> int:
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        return _fail(f"--out {args.out} exists and is not a directory: give a folder for the report")
    try:
        if args.endpoint:
            from serving.acceptance import evaluate_endpoint
            from serving.client import read_key

            evaluation = evaluate_endpoint(args.endpoint, args.data, args.split, concurrency=args.concurrency,
                                           key=read_key(args.key_file))
        else:
            from pipelines.evaluation.evaluate import evaluate
            from pipelines.registry import configure_tracking

            configure_tracking(args.tracking_uri)
            evaluation = evaluate(args.model, args.data, args.split, batch_size=args.batch_size)
    except (ValueError, FileNotFoundError, LookupError) as exc:
        return _fail(str(exc))
    print(evaluation.table())
    if args.json == "-":
        print(evaluation.to_json())
    elif args.json:
        Path(args.json).write_text(evaluation.to_json() + "\n")
        print(f"wrote {args.json}")
    if args.out:
        from pipelines.evaluation.report import write_report

        try:
            written = write_report(evaluation, args.out)
        except (ValueError, OSError) as exc:
            return _fail(f"writing the report to {args.out}: {exc}")
        print()
        print(Path(args.out, "operating_table.txt").read_text(), end="")
        for path in written:
            print(f"wrote {path}")
    return 0
