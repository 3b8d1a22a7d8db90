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


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0 (anything else is a usage error, exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a number > 0")
    return value


def moment(text: str) -> float:
    """An argparse ``type``: an ISO 8601 time (UTC when no zone is given) -> unix seconds."""
    from datetime import datetime, timezone

    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def add_log_selection(parser: argparse.ArgumentParser) -> None:
    """--line, --since and --until: which decisions of a decision log a command reads."""
    parser.add_argument("--since", type=moment, help="ISO 8601 time, inclusive (UTC without a zone)")
    parser.add_argument("--until", type=moment, help="ISO 8601 time, exclusive")
    parser.add_argument("--line", help="only this line")
