"""The trial table: each trial's sampled values, best metric, epochs run and status."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuning.trainable import EPOCHS_DONE

COMPLETED = "completed"  # ran every epoch
STOPPED_EARLY = "stopped early"  # the scheduler ended it
ERROR = "error"  # training raised; the search went on without it
UNFINISHED = "unfinished"  # the search was interrupted before the trial ended


@dataclass
class TrialRow:
    trial_id: str
    params: dict[str, Any]
    status: str
    epochs_run: int = 0
    best: float | None = None  # best value of the search metric over the trial's epochs
    best_epoch: int | None = None  # 0-based, as the training loop reports it
    error: str | None = None
    path: str | None = None  # the trial's directory

    def to_dict(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, **self.params, "status": self.status, "epochs_run": self.epochs_run,
                "best": self.best, "best_epoch": self.best_epoch, "error": self.error}


@dataclass
class TrialTable:
    metric: str
    mode: str
    rows: list[TrialRow] = field(default_factory=list)
    expected_trials: int = 0  # how many trials the search space makes

    @property
    def complete(self) -> bool:
        """Every trial of the search exists and has ended (completed, stopped or failed)."""
        return len(self.rows) >= self.expected_trials and all(row.status != UNFINISHED for row in self.rows)

    def best(self) -> TrialRow | None:
        """The trial with the best metric among those that did not fail."""
        scored = [row for row in self.rows if row.status != ERROR and row.best is not None]
        if not scored:
            return None
        pick = min if self.mode == "min" else max
        return pick(scored, key=lambda row: row.best)

    def format(self) -> str:
        return format_trial_table(self.rows, self.metric)


def collect_trials(results: Sequence[Any], metric: str, mode: str, max_epochs: int,
                   unfinished: Collection[str] = (), expected_trials: int = 0) -> TrialTable:
    """Rows from a Tune ``ResultGrid`` (any sequence of ``ray.tune.Result``).

    ``unfinished``: ids of trials that had not ended when the search stopped (an
    interrupted search). A trial that ended short of ``max_epochs`` without an error was
    stopped by the scheduler.
    """
    table = TrialTable(metric, mode, expected_trials=expected_trials)
    for result in results:
        history = result.metrics_dataframe
        metrics = result.metrics or {}
        row = TrialRow(trial_id=str(metrics.get("trial_id") or Path(result.path).name),
                       params=dict(result.config or {}), status=UNFINISHED, path=result.path)
        if history is not None and metric in history and history[metric].notna().any():
            values = history[metric].astype(float)
            index = values.idxmin() if mode == "min" else values.idxmax()
            row.best = float(values[index])
            row.best_epoch = int(history["epoch"][index]) if "epoch" in history else None
            row.epochs_run = int(history[EPOCHS_DONE].max()) if EPOCHS_DONE in history else len(history)
        if result.error is not None:
            row.status, row.error = ERROR, _first_line(result.error)
        elif row.epochs_run >= max_epochs:
            row.status = COMPLETED
        elif row.trial_id not in unfinished:
            row.status = STOPPED_EARLY
        table.rows.append(row)
    table.rows.sort(key=lambda row: row.trial_id)
    return table


def merge_train_reports(table: TrialTable, reports: dict[str, list[dict[str, Any]]], max_epochs: int) -> None:
    """Fold in epochs that a trial's Ray Train run reported but Tune never saw.

    On Ctrl+C Tune stops listening before the trial's trainer stops; an epoch finished in
    that gap is checkpointed (and picked up on resume) without reaching Tune's history.
    ``reports``: trial id -> the Train run's reported metrics (its kept checkpoints).
    """
    for row in table.rows:
        for metrics in reports.get(row.trial_id, []):
            if "epoch" not in metrics:
                continue
            row.epochs_run = max(row.epochs_run, int(metrics["epoch"]) + 1)
            value = metrics.get(table.metric)
            better = row.best is None or (value < row.best if table.mode == "min" else value > row.best)
            if value is not None and better:
                row.best, row.best_epoch = float(value), int(metrics["epoch"])
        if row.status == STOPPED_EARLY and row.epochs_run >= max_epochs:
            row.status = COMPLETED


def format_trial_table(rows: Sequence[TrialRow], metric: str) -> str:
    param_keys = sorted({key for row in rows for key in row.params})
    header = ["trial", *param_keys, f"best {metric}", "best epoch", "epochs", "status"]
    body = [
        [row.trial_id, *(_cell(row.params.get(key)) for key in param_keys), _cell(row.best),
         _cell(row.best_epoch), str(row.epochs_run), row.status + (f": {row.error}" if row.error else "")]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *body]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _first_line(error: BaseException, limit: int = 120) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[-1] if lines else ''}"
    return text if len(text) <= limit else text[: limit - 3] + "..."

