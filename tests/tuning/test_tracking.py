from mlflow import MlflowClient
from mlflow.entities import Metric

from tuning.tracking import log_unseen_epochs


def test_epochs_tune_never_passed_on_reach_the_trial_run_once(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("search", str(tmp_path / "artifacts"))).info.run_id
    for epoch, mae in ((0, 0.05), (1, 0.04)):  # what Tune's callback logged
        client.log_batch(run_id, metrics=[Metric("epoch", epoch, 0, epoch), Metric("val_mae", mae, 0, epoch)])
    # The Train run's kept reports: the best epoch (seen) and the latest (finished after the stop).
    reports = [{"epoch": 1, "val_mae": 0.04, "timestamp": 1_700_000_000.0},
               {"epoch": 2, "val_mae": 0.035, "timestamp": 1_700_000_060.0, "should_checkpoint": True,
                "note": "not a number"}]
    assert log_unseen_epochs(client, run_id, reports) == 1
    history = client.get_metric_history(run_id, "val_mae")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.05), (1, 0.04), (2, 0.035)]
    assert [m.timestamp for m in history if m.step == 2] == [1_700_000_060_000]
    assert "note" not in client.get_run(run_id).data.metrics
    assert log_unseen_epochs(client, run_id, reports) == 0  # a second finish logs nothing twice
    assert log_unseen_epochs(client, run_id, [{"val_mae": 0.1}]) == 0  # no epoch: nothing to place
