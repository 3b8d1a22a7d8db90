"""`jaffnet demo`, the README's `make demo`, end to end at a toy size (its real
settings train for minutes; docs/benchmarks/demo.md quotes that run)."""

import json

import mlflow

from pipelines.training.demo import run_demo

TOY = ["width=0.125", "image_size=32", "epochs=1", "warmup_epochs=0", "batch_size=2", "cpus_per_worker=0.25",
       "num_overlays=1"]  # warmup must be shorter than the run


def test_demo_runs_every_stage_and_reports_model_and_baseline(ray_session, tmp_path, monkeypatch, capsys):
    from pipelines.training import demo

    monkeypatch.chdir(tmp_path)  # MLflow artifacts go under ./mlruns
    batches = []
    real_evaluate = demo.evaluate
    monkeypatch.setattr(demo, "evaluate", lambda *args, **kwargs: batches.append(kwargs["batch_size"])
                        or real_evaluate(*args, **kwargs))
    try:
        result = run_demo(tmp_path / "demo_out", count=40, overrides=[*TOY, "val_batch_size=6"],
                          extra_test_frames=20, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    finally:
        mlflow.set_tracking_uri(None)
    out = capsys.readouterr().out
    assert "easy difficulty" in out and "test split, overall" in out and "all-background" in out
    assert "mlflow ui --backend-store-uri" in out
    for row in (result["model"], result["baseline"]):
        assert set(row) >= {"mae", "weighted_f", "s_measure", "mean_e", "max_f"}
    # All-background scores by construction: no false positives, so MAE is the defect area.
    assert result["baseline"]["max_f"] < 0.1 and result["baseline"]["weighted_f"] < 0.05
    manifest = json.loads((tmp_path / "demo_out" / "dataset" / "manifest.json").read_text())
    # 40 frames split 70/15/15, and the 20 extra ones to the test split only
    assert manifest["totals"] == {"train": 28, "val": 6, "test": 26}
    assert "test (26 images" in out
    assert batches == [6]  # the test split runs at validation's batch, not evaluate's default
