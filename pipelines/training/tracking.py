"""MLflow side of training: params, per-epoch metrics, overlays, the model and its registration.

Per-epoch metrics are logged by ``MLflowEpochLogger``, a Ray Train callback that runs in
the Train controller; the rest happens in the driver, before ``fit`` and after it
(``publish_best``), so Ray Tune trials can reuse both pieces.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaffnet.contract import contract_from_metadata, contract_tags
from jaffnet.decision import rule_from_metadata
from jaffnet.io import load_pretrained
from pipelines import registry, storage
from pipelines.evaluation.calibration import CALIBRATION_KEY, CalibrationRecord
from pipelines.training.checkpointing import OVERLAY_DIR, read_checkpoint_metadata
from pipelines.training.config import TrainConfig

RAY_RUN_TAG = "ray_run_name"
SKIPPED_METRICS = {"epoch"}  # the step, not a metric

try:
    from ray.train import UserCallback
except ImportError:  # pragma: no cover - Ray Train V1
    UserCallback = object


class MLflowEpochLogger(UserCallback):
    """Logs rank 0's reported metrics to an MLflow run, with the epoch as the step."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.tracking_uri, self.run_id = tracking_uri, run_id

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        if not metrics or not metrics[0]:
            return
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        reported = metrics[0]
        step = int(reported.get("epoch", 0))
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in reported.items()
                 if key not in SKIPPED_METRICS and isinstance(value, (int, float))]
        MlflowClient(self.tracking_uri).log_batch(self.run_id, metrics=batch)


def git_commit() -> str:
    """The working tree's commit (with ``-dirty``), or ``unknown`` outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def log_config_params(cfg: TrainConfig, extra: dict[str, Any] | None = None, existing: dict[str, str] | None = None):
    """Every config value as an MLflow param. MLflow forbids changing a logged param, so on
    resume only new keys are logged and changed ones are returned (logged as a tag)."""
    import mlflow

    params = {**cfg.params(), **{key: str(value) for key, value in (extra or {}).items()}}
    existing = existing or {}
    changed = {k: v for k, v in params.items() if k in existing and existing[k] != v}
    mlflow.log_params({k: v for k, v in params.items() if k not in existing})
    if changed:
        mlflow.set_tag("resume_changed_params", ", ".join(f"{k}={v}" for k, v in sorted(changed.items())))
    return changed


DATASET_PARAM = "dataset_dir"  # the one dataset of a single-dataset run (jaffnet export --format int8 reads it)


def dataset_params(dataset_dirs: list[str]) -> dict[str, Any]:
    """What a run trained and validated on: each dataset's location, manifest hash and rows per split
    (``data.<i>.dir``, ``data.<i>.manifest``, ``data.<i>.rows.<split>``); a single dataset also as
    ``dataset_dir``. The mix's own hash is the run's and model's ``dataset_manifest``."""
    from pipelines.data.dataset import manifest_hash, read_manifest

    params: dict[str, Any] = {DATASET_PARAM: dataset_dirs[0]} if len(dataset_dirs) == 1 else {}
    for position, location in enumerate(dataset_dirs):
        rows = read_manifest(location)["totals"]
        params |= {f"data.{position}.dir": location, f"data.{position}.manifest": manifest_hash(location),
                   **{f"data.{position}.rows.{split}": count for split, count in rows.items()}}
    return params


def find_run(experiment: str, ray_run_name: str | None):
    """The MLflow run of a Ray Train run (by name, or the newest one), or None."""
    import mlflow

    query = f"tags.{RAY_RUN_TAG} = '{ray_run_name}'" if ray_run_name else f"tags.{RAY_RUN_TAG} != ''"
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string=query, order_by=["start_time DESC"],
                              max_results=1, output_format="list")
    return runs[0] if runs else None


@dataclass
class Publication:
    model_uri: str
    model_name: str
    version: str
    metrics: dict[str, float]
    threshold: float
    image_threshold: float
    epoch: int
    promoted: bool
    promotion_reason: str
    checkpoint_path: str  # a local path or a URI (s3://...)
    calibration: CalibrationRecord | None = None


def best_checkpoint(result, cfg: TrainConfig):
    checkpoint = result.get_best_checkpoint(metric=cfg.best_metric, mode=cfg.best_mode)
    if checkpoint is None:
        raise RuntimeError(f"training produced no checkpoint with metric {cfg.best_metric!r}")
    return checkpoint


def publish_best(result, cfg: TrainConfig, *, dataset_manifest: str, promote: bool = False,
                 provenance: dict[str, str] | None = None) -> Publication:
    """Inside the active MLflow run: log the best checkpoint's overlays and model (weights,
    config JSON, threshold, metrics), register it with alias ``candidate``, and move
    ``champion`` to it if it beats the champion on the same validation data (or ``promote``).
    ``provenance`` (e.g. the encoder's initial weights file and hash) joins the model's
    metadata and the version's tags."""
    import mlflow

    checkpoint = best_checkpoint(result, cfg)
    with checkpoint.as_directory() as directory:
        directory = Path(directory)
        metadata = read_checkpoint_metadata(directory)
        metadata["dataset_manifest"] = dataset_manifest
        metadata.update(provenance or {})
        calibration = None
        if CALIBRATION_KEY in metadata:
            calibration = CalibrationRecord.from_dict(metadata[CALIBRATION_KEY]).with_set(
                dataset_manifest=dataset_manifest)
            metadata[CALIBRATION_KEY] = calibration.to_dict()
        model = load_pretrained(directory)
        if (directory / OVERLAY_DIR).is_dir():
            mlflow.log_artifacts(str(directory / OVERLAY_DIR), artifact_path=f"overlays/epoch_{metadata['epoch']:03d}")
        info = registry.log_model(model, metadata)
    metrics = metadata["metrics"]
    mlflow.log_metrics({f"best_{key}": value for key, value in metrics.items()})
    mlflow.log_metric("best_epoch", metadata["epoch"])
    rule = rule_from_metadata(metadata)
    tags = {
        registry.MANIFEST_TAG: dataset_manifest,
        registry.SELECTION_METRIC_TAG: cfg.best_metric,
        "git_commit": git_commit(),
        "threshold": f"{rule.pixel_threshold:.6f}",
        "image_threshold": f"{rule.image_threshold:.6f}",
        "min_defect_area_px": str(rule.min_defect_area_px),
        **(calibration.tags() if calibration else {}),
        registry.AT_ESCAPE_TARGET_TAG: f"{cfg.metric_escape_target:g}",
        **(provenance or {}),
        **contract_tags(contract_from_metadata(metadata)),
        "epoch": str(metadata["epoch"]),
        **{key: f"{value:.6f}" for key, value in metrics.items()},
    }
    version = registry.register(info.model_uri, cfg.model_name, tags=tags)
    decision = registry.promote_if_better(cfg.model_name, str(version.version), cfg.best_metric,
                                          lower_is_better=cfg.best_mode == "min",
                                          force=promote)
    return Publication(model_uri=f"models:/{cfg.model_name}/{version.version}", model_name=cfg.model_name,
                       version=str(version.version), metrics=metrics, threshold=rule.pixel_threshold, image_threshold=rule.image_threshold,
                       epoch=int(metadata["epoch"]), promoted=decision.promote,
                       promotion_reason=decision.reason,
                       checkpoint_path=storage.display(checkpoint.filesystem, checkpoint.path),
                       calibration=calibration)
