"""MLflow layout of a search: one parent run, one nested run per trial.

The parent run is an ordinary run started by the search driver. ``TrialRuns`` is a Ray
Tune callback (it runs in the driver) that gives each trial a child run, tagged with the
parent's id, the trial id and the search name, holding the trial's sampled params and
its per-epoch metrics. A resumed search finds its trials' existing runs by those tags
instead of opening duplicates.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS

PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "tune.trial_id"
SEARCH_TAG = "tune.search"
STATUS_TAG = "tune.status"
# Bookkeeping that Ray adds to every result; the rest is what the training loop reported.
_NOT_METRICS = set(AUTO_RESULT_KEYS) | {"done", "checkpoint_path", "trial_id", "experiment_tag"}


def training_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The finite numbers in a Tune result that the training loop reported."""
    return {
        key: float(value)
        for key, value in result.items()
        if key not in _NOT_METRICS and isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(value)
    }


def trial_params(config: dict[str, Any]) -> dict[str, str]:
    """A trial's sampled values as MLflow params (lists as ``[1, 2, 4]``)."""
    return {key: str(value) for key, value in sorted(config.items())}


class TrialRuns(Callback):
    """Nested MLflow run per trial under ``parent_run_id``; ``step`` is the epoch."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, search_name: str,
                 step_metric: str = "epoch"):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.search_name = search_name
        self.step_metric = step_metric
        self._client = None
        self._runs: dict[str, str] = {}  # trial id -> MLflow run id

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into the experiment state: leave the client behind.
        return {**self.__dict__, "_client": None, "_runs": {}}

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def run_id(self, trial_id: str) -> str:
        if trial_id not in self._runs:
            self._runs[trial_id] = find_trial_run(self.client, self.experiment_id, self.parent_run_id, trial_id) \
                or self._create_run(trial_id)
        return self._runs[trial_id]

    def _create_run(self, trial_id: str) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{self.search_name}-{trial_id}",
            tags={PARENT_TAG: self.parent_run_id, TRIAL_TAG: trial_id, SEARCH_TAG: self.search_name},
        )
        return run.info.run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        run_id = self.run_id(trial.trial_id)
        logged = self.client.get_run(run_id).data.params
        # Params are write-once in MLflow: a resumed trial re-logs nothing it already has.
        params = {k: v for k, v in trial_params(trial.config).items() if k not in logged}
        if params:
            from mlflow.entities import Param

            self.client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
        self.client.set_tag(run_id, STATUS_TAG, "RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric

        metrics = training_metrics(result)
        step = int(metrics.get(self.step_metric, result.get("training_iteration", 0)))
        timestamp = int(result.get("timestamp", 0) * 1000)
        self.client.log_batch(self.run_id(trial.trial_id),
                              metrics=[Metric(k, v, timestamp, step) for k, v in metrics.items()])

    def on_trial_complete(self, iteration, trials, trial, **info):
        # Also called for trials the scheduler stopped; the search tags the final status.
        self._end(trial, "TERMINATED", "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "ERROR", "FAILED")

    def _end(self, trial, tune_status: str, mlflow_status: str) -> None:
        run_id = self.run_id(trial.trial_id)
        self.client.set_tag(run_id, STATUS_TAG, tune_status)
        self.client.set_terminated(run_id, mlflow_status)


def log_unseen_epochs(client, run_id: str, reports: list[dict[str, Any]], step_metric: str = "epoch") -> int:
    """Log into a trial's nested run the epochs its Ray Train run reported but Tune never passed
    on (finished after Ctrl+C or after the scheduler's stop); returns how many. ``reports``:
    the Train run's kept reports (``tuning.trials.merge_train_reports`` counts the same ones)."""
    from mlflow.entities import Metric

    logged = {metric.step for metric in client.get_metric_history(run_id, step_metric)}
    unseen = {int(report[step_metric]): report for report in reports
              if step_metric in report and int(report[step_metric]) not in logged}
    for step, report in sorted(unseen.items()):
        timestamp = int(report.get("timestamp", 0) * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, timestamp, step) for k, v in training_metrics(report).items()])
    return len(unseen)


def find_trial_run(client, experiment_id: str, parent_run_id: str, trial_id: str) -> str | None:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def trial_runs(client, experiment_id: str, parent_run_id: str) -> dict[str, Any]:
    """Trial id -> MLflow run of every nested run under a search's parent run."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                              max_results=10_000)
    return {run.data.tags[TRIAL_TAG]: run for run in runs if TRIAL_TAG in run.data.tags}
