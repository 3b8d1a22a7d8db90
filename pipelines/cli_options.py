"""argparse options that the commands of every layer share (stdlib only: `jaffnet --help` stays light)."""

from __future__ import annotations

import argparse


def add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri",
                        help="MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
