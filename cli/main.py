"""The ``jaffnet`` console script.

Each top-level package owns its subcommands in a ``commands`` module exposing
``add_commands(subparsers, bench_subparsers)``; this file only collects them, so a
command lives next to the code it drives. A command that drives more than one layer
(``evaluate``: pipelines or serving) is defined whole here in ``cli/``, the one package
allowed to import every layer; no package adds to another's parser. Handlers import heavy modules (Ray, MLflow)
lazily so ``jaffnet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

_COMMAND_MODULES = (
    "pipelines.model_commands",  # export, bench model
    "pipelines.data.commands",  # synth, ingest, bench data
    "pipelines.training.commands",  # train, demo, bench train
    "cli.evaluate",  # evaluate: a model (pipelines) or a live endpoint (serving)
    "tuning.commands",  # tune
    "serving.commands",  # serve, inspect, bench serve
    "serving.replay",  # replay (the decision log against another model version)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaffnet",
        description="JAFFNet surface-defect saliency: data, training, tuning, serving.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = subparsers.add_parser("bench", help="print throughput/latency benchmarks")
    bench_subparsers = bench.add_subparsers(dest="bench_target", metavar="TARGET")
    bench.set_defaults(func=lambda args: bench.print_help() or 2)
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # a real import error inside the module
                raise
            continue
        module.add_commands(subparsers, bench_subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
