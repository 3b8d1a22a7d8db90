"""Console summaries of a training run: best epoch, registry result, where to look in MLflow."""

from __future__ import annotations

from jaffnet.metrics import IMAGE_COLUMNS, format_table
from pipelines.registry import CANDIDATE_ALIAS, CHAMPION_ALIAS, redact


def validation_row(metrics: dict[str, float]) -> dict[str, float]:
    """``val_mae`` ... -> ``mae`` ...: the names ``format_table`` knows."""
    return {key.removeprefix("val_"): value for key, value in metrics.items()}


def mlflow_ui_hint(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return f"open {redact(tracking_uri)} in a browser"
    return f"mlflow ui --backend-store-uri {redact(tracking_uri)}   # then open http://127.0.0.1:5000"


def print_training_summary(outcome) -> None:
    pub = outcome.publication
    row = {f"val, best epoch {pub.epoch + 1}": validation_row(pub.metrics)}
    print(format_table(row))
    print(format_table(row, columns=IMAGE_COLUMNS))
    aliases = [CANDIDATE_ALIAS] + ([CHAMPION_ALIAS] if pub.promoted else [])
    print(f"pixel threshold {pub.threshold:.3f} (max pooled-pixel F-measure on val); image threshold "
          f"{pub.image_threshold:.3f}")
    if pub.calibration is not None:
        print("\n".join(pub.calibration.summary()))
    print(f"registered {pub.model_uri} with alias {', '.join(aliases)} ({pub.promotion_reason})")
    print(f"checkpoint {pub.checkpoint_path}")
    print(f"Ray Train run {outcome.run_name}; MLflow run {outcome.mlflow_run_id} "
          f"(experiment {outcome.experiment_id}) at {redact(outcome.tracking_uri)}")
    print(f"MLflow UI: {mlflow_ui_hint(outcome.tracking_uri)}")
