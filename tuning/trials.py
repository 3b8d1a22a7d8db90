"""The trial table: each trial's sampled values, seed, best metric, epochs run and status;
and the configuration table: each configuration's runs (one per seed) and their mean."""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuning.search_space import CONFIGURATION, SEED
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

    def configurations(self) -> list[ConfigurationRow]:
        """The trials grouped by the configuration they ran (a trial without a
        ``configuration`` value, from a search made before repeats, is its own)."""
        groups: dict[Any, ConfigurationRow] = {}
        for row in self.rows:
            key = row.params.get(CONFIGURATION, row.trial_id)
            params = {k: v for k, v in row.params.items() if k not in (CONFIGURATION, SEED)}
            groups.setdefault(key, ConfigurationRow(key, params)).trials.append(row)
        for group in groups.values():
            group.trials.sort(key=lambda row: row.params.get(SEED) or 0)  # by seed
        ordered = list(groups.values())  # by trial id, for trials without a configuration index
        if all(isinstance(group.configuration, int) for group in ordered):
            ordered.sort(key=lambda group: group.configuration)
        return ordered

    def best_configuration(self) -> ConfigurationRow | None:
        """The configuration with the best mean metric over its runs, among those whose every
        run ended without an error and measured the metric. Picked by the mean, not by its
        best run: the spread between seeds is larger than many configuration differences."""
        scored = [group for group in self.configurations() if group.eligible]
        if not scored:
            return None
        pick = min if self.mode == "min" else max
        return pick(scored, key=lambda group: group.mean)

    def best(self) -> TrialRow | None:
        """The trial to register: the best run of the best configuration (with one run per
        configuration, the trial with the best metric among those that did not fail)."""
        group = self.best_configuration()
        if group is None:
            return None
        pick = min if self.mode == "min" else max
        return pick(group.scored, key=lambda row: row.best)

    def seed_spread(self) -> float | None:
        """Run-to-run spread: the median over configurations of the standard deviation of the
        metric between their seeds (None without a configuration run twice)."""
        spreads = [group.spread for group in self.configurations() if group.spread is not None]
        return statistics.median(spreads) if spreads else None

    def repeated(self) -> bool:
        return any(len(group.trials) > 1 for group in self.configurations())

    def format(self) -> str:
        return format_trial_table(self.rows, self.metric)

    def format_configurations(self) -> str:
        return format_configuration_table(self.configurations(), self.metric)


@dataclass
class ConfigurationRow:
    """One configuration and its runs (trials with the same values, different seeds)."""

    configuration: Any
    params: dict[str, Any]  # the configuration's values, without seed
    trials: list[TrialRow] = field(default_factory=list)

    @property
    def scored(self) -> list[TrialRow]:
        return [row for row in self.trials if row.status != ERROR and row.best is not None]

    @property
    def values(self) -> list[float]:
        """Each scored run's best metric (a run ASHA stopped counts with the best it reached)."""
        return [row.best for row in self.scored]

    @property
    def seeds(self) -> list[Any]:
        return [row.params.get(SEED) for row in self.trials]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def spread(self) -> float | None:
        """Sample standard deviation between the runs (None with fewer than two)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def eligible(self) -> bool:
        """Every run ended (no error, not unfinished) and measured the metric."""
        return bool(self.trials) and all(row.status not in (ERROR, UNFINISHED) and row.best is not None
                                         for row in self.trials)

    def to_dict(self) -> dict[str, Any]:
        return {CONFIGURATION: self.configuration, **self.params, "seeds": self.seeds, "values": self.values,
                "mean": self.mean, "sd": self.spread, "runs": len(self.trials), "eligible": self.eligible,
                "trial_ids": [row.trial_id for row in self.trials],
                "statuses": [row.status for row in self.trials]}


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
    param_keys = _ordered_keys({key for row in rows for key in row.params})
    header = ["trial", *param_keys, f"best {metric}", "best epoch", "epochs", "status"]
    body = [
        [row.trial_id, *(_cell(row.params.get(key)) for key in param_keys), _cell(row.best),
         _cell(row.best_epoch), str(row.epochs_run), row.status + (f": {row.error}" if row.error else "")]
        for row in rows
    ]
    return _layout(header, body)


def format_configuration_table(groups: Sequence[ConfigurationRow], metric: str) -> str:
    param_keys = sorted({key for group in groups for key in group.params})
    header = ["configuration", *param_keys, "seeds", f"mean {metric}", "sd", "runs", "epochs", "statuses"]
    body = []
    for group in groups:
        statuses = [row.status for row in group.trials]
        body.append([str(group.configuration), *(_cell(group.params.get(key)) for key in param_keys),
                     _cell(group.seeds), _cell(group.mean), _cell(group.spread),
                     f"{len(group.values)}/{len(group.trials)}", _cell([row.epochs_run for row in group.trials]),
                     ", ".join(f"{statuses.count(status)} {status}" for status in dict.fromkeys(statuses))])
    return _layout(header, body)


def _ordered_keys(keys: Collection[str]) -> list[str]:
    """Configuration and seed first, then the sampled keys by name."""
    first = [key for key in (CONFIGURATION, SEED) if key in keys]
    return first + sorted(set(keys) - set(first))


def _layout(header: list[str], body: list[list[str]]) -> str:
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

