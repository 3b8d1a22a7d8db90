"""benchmarks/full_size_curve.py at a tiny size on the CPU: what a GPU machine runs, end to end."""

import json

from mlflow.tracking import MlflowClient

from benchmarks import full_size_curve
from jaffnet.metrics import METRIC_COLUMNS


def test_a_tiny_curve_is_trained_validated_tested_and_logged(tmp_path):
    out = tmp_path / "curve"
    assert full_size_curve.main([
        "train", "--out", str(out), "--size", "64", "--frames", "24", "--val-frames", "16", "--test-frames", "16",
        "--max-epochs", "2", "--minutes", "5", "--workers", "1", "--set", "width=0.125", "--set", "batch_size=4",
        "--set", "warmup_epochs=1"]) == 0

    history = [json.loads(line) for line in (out / full_size_curve.CURVE).read_text().splitlines()]
    assert [entry["epoch"] for entry in history] == [-1, 0, 1]  # the untrained model first
    assert all(0 <= entry["val_mae"] <= 1 and "val_image_auroc" in entry for entry in history)
    assert history[1]["lr"] < history[2]["lr"]  # the config's warmup, as `jaffnet train` schedules it
    summary = json.loads((out / full_size_curve.SUMMARY).read_text())
    assert summary["epochs"] == summary["config"]["epochs"] == 2
    assert summary["frames"] == {"train": 24, "val": 16, "test": 16} and summary["config"]["width"] == 0.125
    assert set(METRIC_COLUMNS) <= set(summary["test"]) and set(METRIC_COLUMNS) <= set(summary["test_all_background"])
    assert summary["test_all_background"]["mae"] > 0 and set(summary["test_beats_background"]) <= set(METRIC_COLUMNS)
    assert (out / full_size_curve.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert full_size_curve.main(["log", str(out), "--tracking-uri", uri]) == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(full_size_curve.EXPERIMENT).experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_mae")] == [0, 1, 2]
    assert run.data.params["width"] == "0.125" and run.data.tags["difficulty"] == "hard"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        full_size_curve.PLOT, full_size_curve.CURVE, full_size_curve.SUMMARY}
