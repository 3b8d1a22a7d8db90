"""``jaffnet calibrate``: a registered model's decision rule recalibrated for a quality target,
without retraining.

The frames of a dataset split (``--data``), or the frames operators reviewed in a decision log
(``--log``), go through the model's own input contract (the one frame -> probability path
evaluation and serving take); the image threshold is chosen for the target
(``max_escape_rate``, ``max_overkill_rate`` or ``escape_cost``) at the model's own pixel
threshold; the result is registered as a **new version with the same weights** (their hash
recorded and checked), the new rule, its :class:`CalibrationRecord` (counts, one-sided 95 %
bounds, warnings) and lineage tags. No alias moves unless asked.

From a log the labels are the operators' verdicts and every reviewed frame is weighted by the
frames it stands for (``pipelines.evaluation.line_reviews``): the rates the cut is chosen on and
the bounds (on Kish's effective counts) are those of the line, not of the over-sampled NG frames.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaffnet.decision import RULE_KEY, DecisionRule
from jaffnet.io import weights_sha256
from pipelines import registry
from pipelines.evaluation.calibration import CALIBRATION_KEY, CalibrationRecord, Objective
from pipelines.evaluation.evaluate import Evaluation, predict_split
from pipelines.evaluation.line_reviews import LogSelection, ReviewSample, judged_frames
from pipelines.evaluation.scoring import FrameRecord, calibrate_rule, score_predictions

EXPERIMENT = "jaffnet-calibration"
WEIGHTS_TAG = "weights_sha256"
SOURCE_TAG = "calibrated_from"
# Tags of the source version that describe its old rule, replaced or dropped in the new version (with
# every calibration_* tag: its calibration set may have been a split or a log selection).
_RULE_TAGS = ("threshold", "image_threshold", "min_defect_area_px", "val_escape_rate", "val_overkill_rate",
              "val_image_threshold", "calibrate_for")
_CALIBRATION_TAG_PREFIX = "calibration_"


@dataclass
class Recalibration:
    model_uri: str  # the new version
    source_uri: str
    rule: DecisionRule
    previous_rule: DecisionRule
    calibration: CalibrationRecord
    evaluation: Evaluation | None  # the calibration split at the new rule (None from a log: no masks)
    weights_sha256: str
    promoted: bool
    promotion_reason: str
    run_id: str

    def summary(self) -> str:
        old, new = self.previous_rule, self.rule
        lines = [f"registered {self.model_uri} (same weights as {self.source_uri}, sha256 {self.weights_sha256[:16]}...)",
                 f"image threshold {old.image_threshold:.6f} -> {new.image_threshold:.6f} (pixel threshold "
                 f"{new.pixel_threshold:.4f}, min_defect_area_px {new.min_defect_area_px})",
                 *self.calibration.summary(),
                 f"champion: {'moved to the new version' if self.promoted else 'not moved'} ({self.promotion_reason})",
                 f"MLflow run {self.run_id}"]
        return "\n".join(lines)


def recalibrate(model_uri: str, dataset_dir: str | Path, split: str = "val", *, objective: Objective,
                min_defect_area_px: int | None = None, promote: bool = False, batch_size: int = 8,
                report_dir: str | Path | None = None) -> Recalibration:
    """Recalibrate ``model_uri`` (``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``) on
    ``split`` of ``dataset_dir`` for ``objective``; see the module docstring.

    Raises ValueError for a model that is not a registered version, a split without both
    defective and good frames, or frames the model's contract cannot read.
    """
    from pipelines.data.dataset import manifest_hash

    _check_request(model_uri, min_defect_area_px)
    manifest = manifest_hash(dataset_dir)  # fails clearly on a missing or un-ingested dataset
    source, loaded = _load_source(model_uri)
    area = _area(loaded.rule, min_defect_area_px)
    try:
        samples, probabilities = predict_split(loaded.model, loaded.contract, dataset_dir, split,
                                               batch_size=batch_size)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"{model_uri} cannot score the {split} split of {dataset_dir} through its input contract "
                         f"({loaded.contract.describe()}): {exc}") from exc
    if not samples:
        raise ValueError(f"the {split} split of {dataset_dir} holds no frames to calibrate on")
    defective = sum(bool(s.mask.any()) for s in samples)
    if defective in (0, len(samples)):
        kind = "defective" if defective == 0 else "good (defect-free)"
        raise ValueError(f"the {split} split of {dataset_dir} holds no {kind} frames: a threshold trades escapes "
                         f"against overkill, so it needs both ({len(samples)} frames, {defective} defective)")
    scores = score_predictions(probabilities, samples, min_defect_area_px=area, objective=objective,
                               pixel_threshold=loaded.rule.pixel_threshold, per_class=True,
                               calibration_set={"split": split, "dataset_manifest": manifest})
    rule, calibration = scores.rule, scores.calibration
    evaluation = Evaluation.from_scores(scores, loaded.contract, str(model_uri), split, source.name)
    tags = {}
    if split == "val" and source.tags.get(registry.MANIFEST_TAG) == manifest:
        # the promotion gate reads these: valid only on the data the model was validated on
        image = scores.image_rows["overall"]
        tags = {key: f"{image[name]:.6f}" for key, name in (("val_escape_rate", "escape_rate"),
                                                           ("val_overkill_rate", "overkill_rate"))}
    return _register(model_uri, source, loaded, rule, calibration, evaluation=evaluation, extra_tags=tags,
                     params={"split": split, "dataset_manifest": manifest},
                     metrics={f"{split}_{key}": value for key, value in scores.image_rows["overall"].items()},
                     promote=promote, report_dir=report_dir)


def recalibrate_from_log(model_uri: str, selection: LogSelection, *, objective: Objective,
                         min_defect_area_px: int | None = None, promote: bool = False,
                         batch_size: int = 8) -> Recalibration:
    """Recalibrate ``model_uri`` on the reviewed kept frames of a decision log ``selection``: labels
    from the operators' verdicts, each frame weighted by the frames it stands for; see the module
    docstring. The calibration set recorded is the selection, the number of reviewed frames and a
    hash of their request ids and verdicts.

    Raises FileNotFoundError without a log; ValueError for a model that is not a registered version
    or a selection without both defective and good reviewed frames.
    """
    from pipelines.decision_records import DecisionReader

    _check_request(model_uri, min_defect_area_px)
    reader = DecisionReader(selection.folder)
    if not reader.exists():
        raise FileNotFoundError(f"no decision log in {selection.folder} (expected {reader.path.name})")
    source, loaded = _load_source(model_uri)
    area = _area(loaded.rule, min_defect_area_px)
    sample = ReviewSample()
    kept = reader.with_frames(since=selection.since, until=selection.until, line=selection.line)
    verdicts = [verdict for _, _, verdict in
                judged_frames((row for row in kept if sample.offer(row[0])), loaded, batch_size=batch_size)]
    truth = sample.truth_ng()
    if not truth.any() or truth.all():
        missing = ("reviewed kept frame" if not len(truth) else
                   "NG verdict (defective frame)" if not truth.any() else "OK verdict (good frame)")
        raise ValueError(f"no {missing} in the decision log selection ({selection}): a threshold trades escapes "
                         f"against overkill, so it needs operators' verdicts of both kinds on kept frames "
                         f"({len(truth)} reviewed, {int(truth.sum())} NG; {sample.unreviewed} kept frame(s) "
                         "nobody reviewed)")
    frames = {row.request_id: FrameRecord(row.line or "-", bool(defective), verdict.image_score,
                                          largest_region_px=verdict.largest_region_px)
              for row, defective, verdict in zip(sample.rows, truth, verdicts)}
    described = {**selection.describe(), "reviewed_frames": str(len(sample.rows)), "reviews_sha256": sample.digest()}
    rule, calibration = calibrate_rule(loaded.rule.pixel_threshold, frames, min_defect_area_px=area,
                                       objective=objective, calibration_set=described, weights=sample.weights())
    rates = {"log_escape_rate": calibration.escape_rate, "log_overkill_rate": calibration.overkill_rate}
    return _register(model_uri, source, loaded, rule, calibration, evaluation=None, extra_tags={},
                     params=described, metrics={k: v for k, v in rates.items() if v is not None},
                     promote=promote, report_dir=None)


def _check_request(model_uri: str, min_defect_area_px: int | None) -> None:
    if not str(model_uri).startswith("models:/"):
        raise ValueError(f"calibrate registers a new version of a registered model: give models:/NAME@ALIAS or "
                         f"models:/NAME/VERSION, not {model_uri!r}")
    if min_defect_area_px is not None and (isinstance(min_defect_area_px, bool) or min_defect_area_px < 0):
        raise ValueError(f"min_defect_area_px must be an int >= 0, got {min_defect_area_px!r}")


def _load_source(model_uri: str):
    source = registry.resolve_model_version(model_uri)
    return source, registry.load_model(f"models:/{source.name}/{source.version}")


def _area(rule: DecisionRule, min_defect_area_px: int | None) -> int:
    return rule.min_defect_area_px if min_defect_area_px is None else int(min_defect_area_px)


def _register(model_uri: str, source, loaded, rule: DecisionRule, calibration: CalibrationRecord, *,
              evaluation: Evaluation | None, extra_tags: dict[str, str], params: dict[str, Any],
              metrics: dict[str, float], promote: bool, report_dir: str | Path | None) -> Recalibration:
    """Register the source's weights with ``rule`` as a new version (lineage, the calibration record,
    the weights hash checked on the reloaded version), in an MLflow run with ``params`` and ``metrics``."""
    import mlflow

    from pipelines.evaluation.report import write_report

    weights = weights_sha256(loaded.model)
    metadata: dict[str, Any] = {**loaded.metadata, RULE_KEY: rule.to_dict(), "threshold": rule.pixel_threshold,
                                CALIBRATION_KEY: calibration.to_dict(),
                                SOURCE_TAG: {"name": source.name, "version": str(source.version),
                                             WEIGHTS_TAG: weights}}
    tags = {key: value for key, value in dict(source.tags).items()
            if key not in _RULE_TAGS and not key.startswith(_CALIBRATION_TAG_PREFIX)}
    tags.update({
        SOURCE_TAG: f"{source.name}/{source.version}", WEIGHTS_TAG: weights,
        "threshold": f"{rule.pixel_threshold:.6f}", "image_threshold": f"{rule.image_threshold:.6f}",
        "min_defect_area_px": str(rule.min_defect_area_px), **calibration.tags(), **extra_tags,
    })

    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"calibrate-{source.name}-v{source.version}") as run:
        mlflow.log_params({"source": f"{source.name}/{source.version}", **params,
                           "calibrate_for": calibration.method, "calibration_target": calibration.target,
                           "min_defect_area_px": rule.min_defect_area_px, WEIGHTS_TAG: weights})
        mlflow.log_metrics(metrics)
        if evaluation is not None:
            with tempfile.TemporaryDirectory() as tmp:
                written = write_report(evaluation, Path(report_dir) if report_dir else Path(tmp) / "report")
                mlflow.log_artifacts(str(written[0].parent), artifact_path="calibration_report")
        info = registry.log_model(loaded.model, metadata)
    version = registry.register(info.model_uri, source.name, tags=tags, aliases=())
    reloaded = registry.load_model(f"models:/{source.name}/{version.version}")
    if weights_sha256(reloaded.model) != weights:  # the point of recalibration: never other weights
        raise RuntimeError(f"version {version.version} does not hold the weights of {model_uri}")
    new_uri = f"models:/{source.name}/{version.version}"
    if promote:
        from mlflow import MlflowClient

        MlflowClient().set_registered_model_alias(source.name, registry.CHAMPION_ALIAS, str(version.version))
        promoted, reason = True, "--promote"
    else:
        promoted, reason = False, "pass --promote to move it"
    return Recalibration(new_uri, str(model_uri), rule, loaded.rule, calibration, evaluation, weights, promoted,
                         reason, run.info.run_id)
