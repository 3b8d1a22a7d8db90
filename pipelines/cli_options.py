"""argparse options that the commands of every layer share (stdlib only: `jaffnet --help` stays light)."""

from __future__ import annotations

import argparse


def add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri",
                        help="MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1 (anything else is a usage error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value
