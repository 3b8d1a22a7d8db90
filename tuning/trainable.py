"""One trial: a full Ray Train run of the training loop with the trial's sampled values.

Ray Train V2 cannot be handed to ``Tuner`` directly; the supported pattern is a Tune
function trainable that builds and fits the ``TorchTrainer`` itself, with a callback
that forwards every ``ray.train.report`` to Tune (where ASHA sees it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

from pipelines import storage
from tuning.search_space import CONFIGURATION

# ASHA's clock: epochs finished. The loop reports the 0-based ``epoch``; Tune's own
# ``training_iteration`` restarts when a trial is resumed, the epoch count does not.
EPOCHS_DONE = "epochs_done"
TRAIN_RUNS_DIR = "train_runs"  # <search folder>/train_runs/<trial id>: each trial's Ray Train run
# The Tune driver function only waits on the trainer; the trainer's workers hold the
# real CPUs. Ray rejects 0, so a sliver.
TRIAL_DRIVER_RESOURCES = {"CPU": 0.01}


class ReportEpochsToTune(TuneReportCallback):
    """``TuneReportCallback`` that adds ``epochs_done`` (``epoch + 1``) to each report and
    makes sure the search metric is in it (see ``tune_metrics``)."""

    def __init__(self, metric: str | None = None):
        super().__init__()
        self.metric = metric

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint):
        super().after_report(run_context, [tune_metrics(m, self.metric) for m in metrics], checkpoint)


def tune_metrics(metrics: dict[str, Any], metric: str | None) -> dict[str, Any]:
    """One epoch's report as Tune gets it: with ``epochs_done``, and ``metric`` as NaN when
    the loop could not measure it that epoch (``val_overkill_at_escape`` needs defective and
    good val frames). Tune refuses a result without the search metric (its strict metric
    check raises); ASHA lets a NaN trial go on (it compares with ``<``) and leaves NaNs out
    of its cut-offs, and the trial table ignores them."""
    metrics = {**metrics, EPOCHS_DONE: int(metrics["epoch"]) + 1}
    if metric is not None and metrics.get(metric) is None:
        metrics[metric] = float("nan")
    return metrics


def trial_train_config(base: dict[str, Any], sampled: dict[str, Any], experiment_path: str | Path):
    """The training config of one trial: the search's base config with the trial's values
    (its configuration's and its seed), checkpointing into the search's folder."""
    from pipelines.training.config import TrainConfig

    values = {key: value for key, value in sampled.items() if key != CONFIGURATION}
    return TrainConfig.from_dict({**base, **values, "storage_path": storage.join(experiment_path, TRAIN_RUNS_DIR)})


def trial_run_dir(experiment_path: str | Path, trial_id: str) -> str:
    """Where a trial's Ray Train run (its checkpoints) lives: a local path or a URI."""
    return storage.join(experiment_path, TRAIN_RUNS_DIR, trial_id)


def run_trial(sampled: dict[str, Any], *, base: dict[str, Any], dataset_dir: str, experiment_path: str) -> None:
    """Tune function trainable; ``sampled`` is Tune's config (the sampled values).

    The Train run is named after the trial, so a resumed trial picks up its own last
    checkpoint and every other trial starts fresh.
    """
    from ray import tune

    from pipelines.training.trainer import build_run_config, build_trainer

    cfg = trial_train_config(base, sampled, experiment_path)
    run_config = build_run_config(cfg, tune.get_context().get_trial_id(),
                                  callbacks=[ReportEpochsToTune(cfg.best_metric)])
    # Raises if training fails: Tune marks this trial ERROR and the search goes on.
    build_trainer(cfg, dataset_dir, run_config=run_config).fit()
