"""Run or resume a search: Tune + ASHA over training trials, MLflow parent and nested
runs, the trial table, and registration of the winner.

A search lives in ``<storage_path>/<name>``: Ray Tune's experiment state and trial folders,
``train_runs/<trial id>`` (each trial's Ray Train run and checkpoints) and
``jaffnet_search.json``, the plan that ``resume_search`` rebuilds the search from.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines import storage
from tuning.search_space import (SearchSpace, parse_search_space, space_summary, trial_param_space,
                                 trial_seeds)
from tuning.trainable import EPOCHS_DONE, TRIAL_DRIVER_RESOURCES, run_trial, trial_run_dir, trial_train_config
from tuning.trials import TrialTable, collect_trials, merge_train_reports

SEARCH_PLAN_FILE = "jaffnet_search.json"
# CPUs left per concurrent trial for its Ray Data tasks (a Parquet read task takes a whole
# CPU): with every CPU held by training workers, Ray Data waits forever.
DATA_CPUS_PER_TRIAL = 1.0


class SearchError(RuntimeError):
    """A search that cannot start or resume; the message says what to do."""


@dataclass
class SearchPlan:
    """What a search needs to run, saved beside Tune's state so ``--resume`` rebuilds it."""

    name: str
    experiment_path: str
    dataset_dir: str
    space: dict[str, Any]  # SearchSpace.to_dict()
    space_source: str
    base_config: dict[str, Any]  # TrainConfig.to_dict() before the sampled values
    max_concurrent: int
    # The drawn configurations and the training seeds each runs with (trials: every pair).
    configurations: list[dict[str, Any]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    tracking_uri: str = ""
    mlflow_experiment_id: str = ""
    parent_run_id: str = ""

    @property
    def search_space(self) -> SearchSpace:
        return parse_search_space(self.space, self.space_source)

    @property
    def trial_count(self) -> int:
        if self.configurations:
            return len(self.configurations) * len(self.seeds)
        return self.search_space.trial_count()  # a search planned before configurations were drawn here

    @property
    def train_config(self):
        from pipelines.training.config import TrainConfig

        return TrainConfig.from_dict(self.base_config)

    def save(self) -> str:
        path = storage.join(self.experiment_path, SEARCH_PLAN_FILE)
        storage.write_text(path, json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, experiment_path: str | Path) -> SearchPlan:
        path = storage.join(experiment_path, SEARCH_PLAN_FILE)
        if not storage.is_file(path):
            raise SearchError(f"{experiment_path} is not a jaffnet search to resume ({SEARCH_PLAN_FILE} not found)")
        try:
            return cls(**json.loads(storage.read_text(path)))
        except (json.JSONDecodeError, TypeError) as exc:
            raise SearchError(f"{path} is unreadable: {exc}") from exc


@dataclass
class SearchOutcome:
    plan: SearchPlan
    table: TrialTable
    publication: Any = None  # pipelines.training.tracking.Publication of the winner, if registered

    @property
    def complete(self) -> bool:
        return self.table.complete


def concurrency_limit(cfg, cluster: dict[str, float], requested: int | None = None) -> int:
    """Trials at once: ``requested`` (or as many as fit), capped so every running trial's
    workers get their CPUs (GPUs) and its Ray Data tasks keep some CPU."""
    cpus_per_trial = cfg.num_workers * cfg.cpus_per_worker + DATA_CPUS_PER_TRIAL + TRIAL_DRIVER_RESOURCES["CPU"]
    fits = math.floor(cluster.get("CPU", 0) / cpus_per_trial + 1e-9)
    if cfg.use_gpu:
        fits = min(fits, math.floor(cluster.get("GPU", 0) / cfg.num_workers))
    if fits < 1:
        gpus = f" and {cfg.num_workers} GPUs" if cfg.use_gpu else ""
        raise SearchError(f"one trial needs {cpus_per_trial:g} CPUs{gpus} ({cfg.num_workers} workers x "
                          f"{cfg.cpus_per_worker:g} CPU + {DATA_CPUS_PER_TRIAL:g} for data), the cluster has "
                          f"{cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs; lower num_workers or "
                          "cpus_per_worker with --set")
    return min(requested, fits) if requested else fits


def default_search_name() -> str:
    return time.strftime("tune-%Y%m%d-%H%M%S")


def plan_search(dataset_dir: str | Path, space: SearchSpace, base_cfg, *, name: str | None = None) -> SearchPlan:
    """Check the dataset and the cluster and fix the search's name and place (needs Ray
    started by the entry point)."""
    import ray

    from pipelines.data.dataset import read_manifest

    dataset_dir = storage.resolve(dataset_dir)
    try:
        read_manifest(dataset_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise SearchError(f"--data {dataset_dir} is not an ingested dataset: {exc}") from exc
    name = name or default_search_name()
    experiment_path = storage.join(base_cfg.storage_path, name)
    if storage.exists(experiment_path):
        raise SearchError(f"a search named {name!r} exists at {experiment_path}; resume it with --resume "
                          f"{experiment_path} or pick another --name")
    max_concurrent = concurrency_limit(base_cfg, ray.cluster_resources(), space.max_concurrent)
    if space.max_concurrent and max_concurrent < space.max_concurrent:
        print(f"max_concurrent {space.max_concurrent} lowered to {max_concurrent}: that is what fits the cluster")
    return SearchPlan(name=name, experiment_path=experiment_path, dataset_dir=dataset_dir,
                      space=space.to_dict(), space_source=space.source, base_config=base_cfg.to_dict(),
                      max_concurrent=max_concurrent, configurations=space.configurations(),
                      seeds=trial_seeds(base_cfg.seed, space.repeats))


def latest_search(storage_path: str = "ray_results") -> Path:
    """The most recently started search under the local folder ``storage_path``."""
    root = Path(storage.resolve(storage_path))
    plans = sorted(root.glob(f"*/{SEARCH_PLAN_FILE}"), key=lambda path: path.stat().st_mtime)
    if not plans:
        raise SearchError(f"no search to resume under {root}; pass its folder: --resume SEARCH_DIR")
    return plans[-1].parent


def run_search(plan: SearchPlan, *, stop: Any = None) -> SearchOutcome:
    """Start the planned search, tracked where the entry point configured MLflow.
    ``stop``: an optional Tune stopper (e.g. a time budget); a search it ends early is resumable."""
    import mlflow
    from ray import tune

    from pipelines import registry

    space, cfg = plan.search_space, plan.train_config
    plan.tracking_uri = mlflow.get_tracking_uri()
    experiment = registry.set_experiment(cfg.experiment, cfg.artifact_location)
    with mlflow.start_run(run_name=plan.name, tags={"tune.search": plan.name}) as parent:
        plan.mlflow_experiment_id, plan.parent_run_id = experiment.experiment_id, parent.info.run_id
        plan.save()
        sampled = set(space.parameters)
        mlflow.log_params({**space_summary(space, cfg), "search.max_concurrent": plan.max_concurrent,
                           "dataset_dir": plan.dataset_dir,
                           **{f"train.{k}": str(v) for k, v in plan.base_config.items() if k not in sampled}})
        mlflow.set_tag("tune.experiment_path", plan.experiment_path)
        tuner = tune.Tuner(
            _trainable(plan),
            param_space=trial_param_space(plan.configurations, plan.seeds),
            tune_config=_tune_config(plan, space, cfg),
            run_config=tune.RunConfig(name=plan.name, storage_path=storage.split(plan.experiment_path)[0],
                                      callbacks=[_trial_runs(plan)], stop=stop),
        )
        return _finish(plan, tuner.fit())


def resume_search(experiment_path: str | Path) -> SearchOutcome:
    """Carry on an interrupted search: unfinished trials continue from their last
    checkpoint, errored ones are retried, and MLflow logging goes on in the same runs."""
    import mlflow
    from ray import tune

    experiment_path = storage.resolve(experiment_path)
    plan = SearchPlan.load(experiment_path)
    if not tune.Tuner.can_restore(experiment_path):
        raise SearchError(f"{experiment_path} holds no Ray Tune state to resume (the search never started)")
    plan.experiment_path = experiment_path  # the folder may have moved
    # Tune keeps no functions of the space in its saved state: without the space again, a
    # restarted (errored) trial would get placeholders instead of its configuration's values.
    param_space = trial_param_space(plan.configurations, plan.seeds) if plan.configurations else None
    with mlflow.start_run(run_id=plan.parent_run_id):
        tuner = tune.Tuner.restore(experiment_path, trainable=_trainable(plan), resume_errored=True,
                                   param_space=param_space)
        return _finish(plan, tuner.fit())


def _trainable(plan: SearchPlan):
    from ray import tune

    trainable = tune.with_parameters(run_trial, base=plan.base_config, dataset_dir=plan.dataset_dir,
                                     experiment_path=plan.experiment_path)
    return tune.with_resources(trainable, TRIAL_DRIVER_RESOURCES)


def _tune_config(plan: SearchPlan, space: SearchSpace, cfg):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return tune.TuneConfig(
        metric=cfg.best_metric,
        mode=cfg.best_mode,
        num_samples=space.num_samples,
        # The concurrency bound belongs to the generator (Tune ignores
        # ``max_concurrent_trials`` next to a BasicVariantGenerator).
        search_alg=BasicVariantGenerator(random_state=space.seed, max_concurrent=plan.max_concurrent),
        # ASHA acts on each trial (each seed of a configuration) on its own; see
        # SearchSpace.asha_grace_period for the default grace.
        scheduler=ASHAScheduler(time_attr=EPOCHS_DONE, max_t=cfg.epochs,
                                grace_period=space.asha_grace_period(cfg.epochs),
                                reduction_factor=space.reduction_factor),
    )


def _trial_runs(plan: SearchPlan):
    from tuning.tracking import TrialRuns

    return TrialRuns(plan.tracking_uri, plan.mlflow_experiment_id, plan.parent_run_id, plan.name)


def _finish(plan: SearchPlan, grid) -> SearchOutcome:
    """Table, MLflow summary and (for a finished search) the winner's registration;
    runs inside the active parent run."""
    import mlflow

    cfg = plan.train_config
    table = collect_trials(grid, cfg.best_metric, cfg.best_mode, cfg.epochs,
                           unfinished=unfinished_trials(plan.experiment_path),
                           expected_trials=plan.trial_count)
    reports = _train_reports(plan, table)
    merge_train_reports(table, reports, cfg.epochs)
    finished = table.complete
    outcome = SearchOutcome(plan, table)
    _complete_trial_runs(plan, table, reports)
    mlflow.log_text(table.format() + "\n", "trials.txt")
    mlflow.log_dict([row.to_dict() for row in table.rows], "trials.json")
    mlflow.log_text(table.format_configurations() + "\n", "configurations.txt")
    mlflow.log_dict([group.to_dict() for group in table.configurations()], "configurations.json")
    best = table.best()
    if not finished or best is None:
        mlflow.set_tag("tune.outcome", "interrupted" if not finished else "no successful trial")
        if not finished:
            mlflow.end_run(status="KILLED")
        return outcome
    group = table.best_configuration()
    mlflow.log_metric(f"best_{cfg.best_metric}", best.best)
    mlflow.log_metric(f"best_mean_{cfg.best_metric}", group.mean)
    if group.spread is not None:
        mlflow.log_metric(f"best_sd_{cfg.best_metric}", group.spread)
    if table.seed_spread() is not None:
        mlflow.log_metric(f"seed_sd_{cfg.best_metric}", table.seed_spread())
    mlflow.set_tags({"tune.outcome": "finished", "tune.best_trial": best.trial_id,
                     "tune.best_configuration": str(group.configuration)})
    outcome.publication = publish_winner(plan, best)
    return outcome


def _train_reports(plan: SearchPlan, table: TrialTable) -> dict[str, list[dict[str, Any]]]:
    """Each trial's Ray Train run's kept reports (latest and best checkpoints)."""
    from ray.train import Result

    reports = {}
    for row in table.rows:
        run_dir = trial_run_dir(plan.experiment_path, row.trial_id)
        try:
            result = Result.from_path(run_dir)
        except RuntimeError:  # Ray Train's own "no such run" (the trial never reported)
            continue
        reports[row.trial_id] = [metrics for _, metrics in result.best_checkpoints or []] + [result.metrics or {}]
    return reports


def unfinished_trials(experiment_path: str | Path) -> set[str]:
    """Ids of the trials that a resume would carry on, from Tune's saved experiment state.

    The in-memory results cannot tell: on Ctrl+C Tune saves the state, then marks the
    trials it tears down as terminated.
    """
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(experiment_path))
    return {trial.trial_id for trial in analysis.trials if trial.status not in ("TERMINATED", "ERROR")}


def _complete_trial_runs(plan: SearchPlan, table: TrialTable, reports: dict[str, list[dict[str, Any]]]) -> None:
    """Each nested run gets the trial's final status and the epochs Tune did not pass on."""
    from mlflow import MlflowClient

    from tuning.tracking import STATUS_TAG, log_unseen_epochs, trial_runs

    client = MlflowClient(plan.tracking_uri)
    runs = trial_runs(client, plan.mlflow_experiment_id, plan.parent_run_id)
    for row in table.rows:
        if row.trial_id in runs:
            log_unseen_epochs(client, runs[row.trial_id].info.run_id, reports.get(row.trial_id, []))
            client.set_tag(runs[row.trial_id].info.run_id, STATUS_TAG, row.status)
            client.set_tag(runs[row.trial_id].info.run_id, "tune.epochs_run", str(row.epochs_run))


def publish_winner(plan: SearchPlan, best) -> Any:
    """Log the winning trial's best checkpoint into its nested run, register it as a new
    version with alias ``candidate``, and promote it to ``champion`` only if it beats the
    champion on the same validation data (``pipelines.training.tracking.publish_best``)."""
    import mlflow
    from mlflow import MlflowClient
    from ray.train import Result

    from pipelines.data.dataset import manifest_hash
    from pipelines.training.tracking import publish_best
    from tuning.tracking import find_trial_run, trial_params

    client = MlflowClient(plan.tracking_uri)
    run_id = find_trial_run(client, plan.mlflow_experiment_id, plan.parent_run_id, best.trial_id)
    cfg = trial_train_config(plan.base_config, best.params, plan.experiment_path)
    result = Result.from_path(trial_run_dir(plan.experiment_path, best.trial_id))
    with mlflow.start_run(run_id=run_id, nested=True):
        publication = publish_best(result, cfg, dataset_manifest=manifest_hash(plan.dataset_dir))
    tags = {"tune.search": plan.name, "tune.trial_id": best.trial_id,
            **{f"param.{k}": v for k, v in trial_params(best.params).items()}}
    for key, value in tags.items():
        client.set_model_version_tag(publication.model_name, publication.version, key, value)
    return publication
