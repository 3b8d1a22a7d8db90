"""``train``: one tracked training run, from config to a registered model version.

MLflow run (params, tags) -> Ray Train ``fit`` (per-epoch metrics logged by the Train
controller) -> the best checkpoint logged as the run's model, registered, aliased.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines import registry, storage
from pipelines.training.config import TrainConfig
from pipelines.training.tracking import (RAY_RUN_TAG, MLflowEpochLogger, Publication, dataset_params, find_run,
                                         git_commit, log_config_params, publish_best)
from pipelines.training.trainer import build_run_config, build_trainer, run_dir


@dataclass
class TrainingOutcome:
    run_name: str  # the Ray Train run (checkpoints under storage_path/run_name)
    mlflow_run_id: str
    experiment_id: str
    tracking_uri: str
    publication: Publication
    result: Any  # ray.train.Result


def new_run_name() -> str:
    return f"jaffnet-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def train(cfg: TrainConfig, data: str | Path | Sequence[str | Path], *, run_name: str | None = None,
          resume: bool = False, promote: bool = False, callbacks: tuple = ()) -> TrainingOutcome:
    """Train, log and register in the MLflow tracking server the entry point configured
    (``registry.configure_tracking``). ``data``: one dataset, or several (``--data base --data
    line``) trained on the union of their train splits and validated on that of their val splits;
    the run records each one and the model the mix's manifest hash. ``resume`` continues the named
    (default: newest) run from its last checkpoint, in the same MLflow run."""
    import mlflow

    from jaffnet.io import read_encoder_weights
    from pipelines.data.dataset import dataset_list, mix_manifest_hash

    dataset_dirs = dataset_list(data)  # fails clearly on a missing or un-ingested dataset
    manifest = mix_manifest_hash(dataset_dirs)
    # Read (and for imagenet fetched into the hub cache) here, before any Ray work: a missing
    # file fails now, and the run records which file it was.
    encoder = read_encoder_weights(cfg.encoder_weights, cfg.encoder_depth)[2] if cfg.encoder_weights else {}
    uri = mlflow.get_tracking_uri()
    experiment = registry.set_experiment(cfg.experiment, cfg.artifact_location)

    previous = find_run(cfg.experiment, run_name) if resume else None
    if resume and previous is None:
        which = f"named {run_name!r}" if run_name else "at all"
        raise ValueError(f"--resume: no training run {which} in MLflow experiment {cfg.experiment!r} "
                         f"at {registry.redact(uri)}")
    if previous is not None:
        run_name = previous.data.tags[RAY_RUN_TAG]
    else:
        run_name = run_name or new_run_name()
        folder = run_dir(cfg, run_name)
        if storage.exists(folder):  # Ray would silently resume it
            raise ValueError(f"run {run_name!r} already exists in {folder}; pass --resume to continue it")

    with mlflow.start_run(run_id=previous.info.run_id if previous else None,
                          run_name=None if previous else run_name) as run:
        mlflow.set_tags({RAY_RUN_TAG: run_name, registry.MANIFEST_TAG: manifest, "git_commit": git_commit(),
                         **encoder})
        log_config_params(cfg, dataset_params(dataset_dirs), existing=previous.data.params if previous else None)
        logger = MLflowEpochLogger(uri, run.info.run_id)
        trainer = build_trainer(cfg, dataset_dirs, run_config=build_run_config(cfg, run_name, [logger, *callbacks]))
        result = trainer.fit()
        publication = publish_best(result, cfg, dataset_manifest=manifest, promote=promote, provenance=encoder)
        for position, dataset_dir in enumerate(dataset_dirs):
            folder = "report_val" if len(dataset_dirs) == 1 else f"report_val/data.{position}"
            log_validation_report(publication.model_uri, dataset_dir, folder)
    return TrainingOutcome(run_name=run_name, mlflow_run_id=run.info.run_id,
                           experiment_id=experiment.experiment_id, tracking_uri=uri,
                           publication=publication, result=result)


def log_validation_report(model_uri: str, dataset_dir: str, folder: str = "report_val") -> None:
    """The registered best epoch's val report (per-frame CSV, curves, operating table) in the
    active MLflow run, under ``folder``: what its rule was calibrated on (one report per dataset
    of a mix), scored through the same path as ``jaffnet evaluate --split val --out DIR``."""
    import mlflow

    from pipelines.evaluation.evaluate import evaluate
    from pipelines.evaluation.report import write_report

    with tempfile.TemporaryDirectory() as tmp:
        write_report(evaluate(model_uri, dataset_dir, "val"), tmp)
        mlflow.log_artifacts(tmp, artifact_path=folder)
