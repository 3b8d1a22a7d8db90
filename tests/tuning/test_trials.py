import math
import statistics
from types import SimpleNamespace

import pandas as pd
import pytest

from pipelines.training.config import TrainConfig
from tuning.search import SearchError, concurrency_limit
from tuning.tracking import training_metrics
from tuning.trials import COMPLETED, ERROR, STOPPED_EARLY, UNFINISHED, collect_trials, merge_train_reports


def fake_result(trial_id, params, maes, error=None):
    """What a Tune ``Result`` offers the table: config, history, last metrics, error, path."""
    history = pd.DataFrame({"epoch": range(len(maes)), "val_mae": maes,
                            "epochs_done": range(1, len(maes) + 1)}) if maes else None
    return SimpleNamespace(config=params, metrics_dataframe=history, metrics={"trial_id": trial_id} if maes else {},
                           error=error, path=f"/search/run_trial_{trial_id}")


RESULTS = [
    fake_result("t0", {"lr": 0.01, "dilation_rates": [1, 3, 5]}, [0.4, 0.2, 0.1]),
    fake_result("t1", {"lr": 1e-7, "dilation_rates": [1, 2, 4]}, [0.5]),
    fake_result("t2", {"lr": 0.1, "dilation_rates": [2, 4, 8]}, [0.05], error=RuntimeError("boom\nlast line")),
]


def test_statuses_best_and_table():
    table = collect_trials(RESULTS, "val_mae", "min", max_epochs=3, expected_trials=3)
    assert [row.status for row in table.rows] == [COMPLETED, STOPPED_EARLY, ERROR]
    assert table.complete
    t0 = table.rows[0]
    assert (t0.best, t0.best_epoch, t0.epochs_run) == (0.1, 2, 3)
    # t2 scored better before failing, but a failed trial is never the winner.
    assert table.best().trial_id == "t0"
    text = table.format()
    lines = text.splitlines()
    assert lines[0].split() == ["trial", "dilation_rates", "lr", "best", "val_mae", "best", "epoch", "epochs", "status"]
    assert lines[2].split() == ["t0", "1,3,5", "0.01", "0.1", "2", "3", "completed"]
    assert "stopped early" in lines[3] and "error: RuntimeError: last line" in lines[4]


def test_interrupted_search_is_incomplete():
    results = RESULTS[:2] + [fake_result("t3", {"lr": 0.01, "dilation_rates": [1, 2, 4]}, [])]
    table = collect_trials(results, "val_mae", "min", max_epochs=3, unfinished={"t1", "run_trial_t3"},
                           expected_trials=3)
    status = {row.trial_id: row.status for row in table.rows}
    # A trial with no result yet is named after its folder.
    assert status == {"t0": COMPLETED, "t1": UNFINISHED, "run_trial_t3": UNFINISHED}
    assert not table.complete


def test_a_search_missing_trials_is_incomplete():
    # Interrupted between trials: every trial so far ended, but not all were created.
    table = collect_trials(RESULTS[:2], "val_mae", "min", max_epochs=3, expected_trials=3)
    assert [row.status for row in table.rows] == [COMPLETED, STOPPED_EARLY]
    assert not table.complete


def test_max_mode_picks_the_highest():
    results = [fake_result("a", {}, [0.2, 0.3]), fake_result("b", {}, [0.6])]
    for result in results:
        result.metrics_dataframe = result.metrics_dataframe.rename(columns={"val_mae": "val_weighted_f"})
    table = collect_trials(results, "val_weighted_f", "max", max_epochs=2)
    assert table.best().trial_id == "b"


def test_concurrency_leaves_cpus_for_data():
    one_worker = TrainConfig(num_workers=1, cpus_per_worker=0.5)
    assert concurrency_limit(one_worker, {"CPU": 2}) == 1  # 0.5 train + 1 data + driver each
    assert concurrency_limit(one_worker, {"CPU": 4}) == 2
    assert concurrency_limit(one_worker, {"CPU": 4}, requested=1) == 1
    assert concurrency_limit(one_worker, {"CPU": 8}, requested=9) == 5
    gpu = TrainConfig(num_workers=2, cpus_per_worker=1, use_gpu=True)
    assert concurrency_limit(gpu, {"CPU": 32, "GPU": 4}) == 2
    with pytest.raises(SearchError, match="one trial needs 3.01 CPUs"):
        concurrency_limit(TrainConfig(num_workers=2, cpus_per_worker=1), {"CPU": 2})
    with pytest.raises(SearchError, match="2 GPUs"):
        concurrency_limit(gpu, {"CPU": 32, "GPU": 1})


def test_training_metrics_drop_tune_bookkeeping():
    result = {"val_mae": 0.1, "epoch": 2, "epochs_done": 3, "time_total_s": 5.0, "training_iteration": 3,
              "checkpoint_path": "/x", "done": False, "pid": 7, "val_loss": float("nan"), "date": "today"}
    assert training_metrics(result) == {"val_mae": 0.1, "epoch": 2.0, "epochs_done": 3.0}


def test_epochs_only_the_trainer_reported_count():
    # Tune saw epoch 0 of t1; its trainer also finished epoch 1 (after a Ctrl+C) and then
    # the resumed trial had nothing left to train.
    table = collect_trials(RESULTS[:2], "val_mae", "min", max_epochs=2, expected_trials=2)
    assert table.rows[1].status == STOPPED_EARLY
    merge_train_reports(table, {"t1": [{"epoch": 1, "val_mae": 0.3}, {"epoch": 0, "val_mae": 0.5}]}, max_epochs=2)
    t1 = table.rows[1]
    assert (t1.status, t1.epochs_run, t1.best, t1.best_epoch) == (COMPLETED, 2, 0.3, 1)


def repeated_results():
    """Configuration 0: best single run (0.05) but a poor mean; configuration 1: the best
    mean; configuration 2: one repeat failed."""
    runs = [(0, 0, [0.3, 0.05]), (1, 0, [0.2, 0.12]), (2, 0, [0.01]),
            (0, 1, [0.4, 0.35]), (1, 1, [0.15, 0.14]), (2, 1, None)]
    return [fake_result(f"t{i}", {"configuration": c, "seed": s, "lr": 10.0 ** -(c + 2)}, maes or [],
                        error=RuntimeError("diverged") if maes is None else None)
            for i, (c, s, maes) in enumerate(runs)]


def test_the_best_configuration_is_picked_by_its_mean_over_seeds():
    table = collect_trials(repeated_results(), "val_mae", "min", max_epochs=2, expected_trials=6)
    groups = {group.configuration: group for group in table.configurations()}
    assert list(groups) == [0, 1, 2] and table.repeated()
    assert groups[0].seeds == [0, 1] and groups[0].params == {"lr": 0.01}
    assert groups[0].mean == pytest.approx(0.2) and groups[0].spread == pytest.approx(0.2121, abs=1e-4)
    assert groups[1].mean == pytest.approx(0.13) and groups[1].eligible
    # A configuration with a failed run is reported but cannot win, whatever its other run scored.
    assert groups[2].values == [0.01] and not groups[2].eligible
    assert table.best_configuration().configuration == 1
    assert table.best().trial_id == "t1"  # the winning configuration's best run is registered
    assert table.seed_spread() == pytest.approx(statistics.median([groups[0].spread, groups[1].spread]))

    lines = table.format_configurations().splitlines()
    assert lines[0].split() == ["configuration", "lr", "seeds", "mean", "val_mae", "sd", "runs", "epochs", "statuses"]
    assert lines[3].split()[:5] == ["1", "0.001", "0,1", "0.13", "0.01414"]
    assert lines[4].endswith("1 stopped early, 1 error")
    # The trial table leads with configuration and seed.
    assert table.format().splitlines()[0].split()[:4] == ["trial", "configuration", "seed", "lr"]
    assert table.configurations()[1].to_dict()["values"] == [0.12, 0.14]


def test_trials_without_a_configuration_are_their_own():
    table = collect_trials(RESULTS, "val_mae", "min", max_epochs=3, expected_trials=3)
    assert [group.configuration for group in table.configurations()] == ["t0", "t1", "t2"]
    assert not table.repeated() and table.seed_spread() is None


def test_a_metric_never_measured_gives_no_winner():
    # val_overkill_at_escape is NaN in every epoch where val lacks good or defective frames.
    table = collect_trials([fake_result("a", {}, [float("nan"), float("nan")])], "val_mae", "min", max_epochs=2)
    assert table.rows[0].best is None and table.best() is None


def test_tune_gets_the_search_metric_in_every_report():
    from tuning.trainable import tune_metrics

    reported = tune_metrics({"epoch": 0, "val_mae": 0.2}, "val_overkill_at_escape")
    assert reported["epochs_done"] == 1 and math.isnan(reported["val_overkill_at_escape"])
    assert tune_metrics({"epoch": 2, "val_overkill_at_escape": 0.25}, "val_overkill_at_escape") == {
        "epoch": 2, "val_overkill_at_escape": 0.25, "epochs_done": 3}
