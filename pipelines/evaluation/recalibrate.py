"""``jaffnet calibrate``: a registered model's decision rule recalibrated for a quality target,
without retraining.

The frames of a dataset split go through the model's own input contract (the one frame ->
probability path evaluation and serving take); the image threshold is chosen for the target
(``max_escape_rate``, ``max_overkill_rate`` or ``escape_cost``) at the model's own pixel
threshold; the result is registered as a **new version with the same weights** (their hash
recorded and checked), the new rule, its :class:`CalibrationRecord` (counts, one-sided 95 %
bounds, warnings) and lineage tags. No alias moves unless asked.
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
from pipelines.evaluation.scoring import score_predictions

EXPERIMENT = "jaffnet-calibration"
WEIGHTS_TAG = "weights_sha256"
SOURCE_TAG = "calibrated_from"
# Tags of the source version that describe its old rule, replaced or dropped in the new version.
_RULE_TAGS = ("threshold", "image_threshold", "min_defect_area_px", "val_escape_rate", "val_overkill_rate",
              "val_image_threshold", "calibrate_for", "calibration_target", "calibration_split",
              "calibration_dataset_manifest", "calibration_escape_upper95", "calibration_overkill_upper95",
              "calibration_warnings")


@dataclass
class Recalibration:
    model_uri: str  # the new version
    source_uri: str
    rule: DecisionRule
    previous_rule: DecisionRule
    calibration: CalibrationRecord
    evaluation: Evaluation  # the calibration split at the new rule
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
    import mlflow

    from pipelines.data.dataset import manifest_hash
    from pipelines.evaluation.report import write_report

    if not str(model_uri).startswith("models:/"):
        raise ValueError(f"calibrate registers a new version of a registered model: give models:/NAME@ALIAS or "
                         f"models:/NAME/VERSION, not {model_uri!r}")
    if min_defect_area_px is not None and (isinstance(min_defect_area_px, bool) or min_defect_area_px < 0):
        raise ValueError(f"min_defect_area_px must be an int >= 0, got {min_defect_area_px!r}")
    manifest = manifest_hash(dataset_dir)  # fails clearly on a missing or un-ingested dataset
    source = registry.resolve_model_version(model_uri)
    loaded = registry.load_model(f"models:/{source.name}/{source.version}")
    previous = loaded.rule
    area = previous.min_defect_area_px if min_defect_area_px is None else int(min_defect_area_px)
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
                               pixel_threshold=previous.pixel_threshold, per_class=True,
                               calibration_set={"split": split, "dataset_manifest": manifest})
    rule, calibration = scores.rule, scores.calibration
    weights = weights_sha256(loaded.model)
    evaluation = Evaluation.from_scores(scores, loaded.contract, str(model_uri), split, source.name)

    metadata: dict[str, Any] = {**loaded.metadata, RULE_KEY: rule.to_dict(), "threshold": rule.pixel_threshold,
                                CALIBRATION_KEY: calibration.to_dict(),
                                SOURCE_TAG: {"name": source.name, "version": str(source.version),
                                             WEIGHTS_TAG: weights}}
    tags = {key: value for key, value in dict(source.tags).items() if key not in _RULE_TAGS}
    tags.update({
        SOURCE_TAG: f"{source.name}/{source.version}", WEIGHTS_TAG: weights,
        "threshold": f"{rule.pixel_threshold:.6f}", "image_threshold": f"{rule.image_threshold:.6f}",
        "min_defect_area_px": str(rule.min_defect_area_px), **calibration.tags(),
    })
    same_val = split == "val" and tags.get(registry.MANIFEST_TAG) == manifest
    if same_val:  # the promotion gate reads these: valid only on the data the model was validated on
        image = scores.image_rows["overall"]
        tags.update({key: f"{image[name]:.6f}" for key, name in (("val_escape_rate", "escape_rate"),
                                                                 ("val_overkill_rate", "overkill_rate"))})

    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"calibrate-{source.name}-v{source.version}") as run:
        mlflow.log_params({"source": f"{source.name}/{source.version}", "split": split, "dataset_manifest": manifest,
                           "calibrate_for": objective.method, "calibration_target": objective.value,
                           "min_defect_area_px": area, WEIGHTS_TAG: weights})
        mlflow.log_metrics({f"{split}_{key}": value for key, value in scores.image_rows["overall"].items()})
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
    return Recalibration(new_uri, str(model_uri), rule, previous, calibration, evaluation, weights, promoted,
                         reason, run.info.run_id)

