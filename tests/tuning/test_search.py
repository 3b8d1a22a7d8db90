"""End-to-end searches of a tiny model on a tiny dataset (CPU, one worker per trial)."""

import json
import signal
import threading
from pathlib import Path

import pytest
from ray.tune import Stopper

# Tiny and serial: one trial at a time makes ASHA's decisions depend only on the metrics.
# A quarter CPU per worker: with the suite's dashboard-less Ray, Train V2 cannot release a
# killed trial's worker placement group until the session ends (its cleaner needs the
# State API), and those leftovers must not starve the next trial's Ray Data reads.
TINY_TRAINING = """
training:
  width: 0.125
  image_size: 32
  batch_size: 2
  num_workers: 1
  cpus_per_worker: 0.25
  num_overlays: 0
  scheduler: none
  best_metric: val_mae
  max_failures: 0
"""


@pytest.fixture(scope="module")
def dataset(ray_session, tmp_path_factory):
    from tests.datasets import make_tiny_dataset

    return make_tiny_dataset(tmp_path_factory.mktemp("tune-data"), count=16, size=32)


@pytest.fixture()
def tracking_uri(tmp_path, monkeypatch):
    import mlflow

    from pipelines import registry

    monkeypatch.chdir(tmp_path)  # MLflow artifacts (./mlruns) stay in the test folder
    yield registry.configure_tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(None)


def nested_runs(client, parent_run_id):
    from tuning.tracking import PARENT_TAG, TRIAL_TAG

    runs = client.search_runs(["1"], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'")
    return {run.data.tags[TRIAL_TAG]: run for run in runs}


def test_a_search_stops_a_trial_early_and_registers_the_winner(dataset, tracking_uri, tmp_path, capsys):
    """Trials run in grid order: the first sets ASHA's bar after epoch 2, the second falls below it
    and is stopped. The test is about the search machinery, so which trial is worse is fixed before
    any learning: the heads start at a defect probability of 0.03 (about right: val MAE ~0.05) or 0.9
    (MAE ~0.85), and lr 1e-7 keeps them there. (A working lr against a tiny one raced: on 11 training
    frames lr 0.01 sometimes over-predicted through epoch 2, val MAE 0.64 against the untrained 0.50,
    and the tiny one won.) Two trials are the fewest that show it: each costs ~20 s of worker start-up
    here. 128 px: an epoch takes ~0.75 s rather than 0.4 s, so the second trial does not finish its
    last epoch before Tune's stop reaches it (then it rightly counts as completed)."""
    from mlflow import MlflowClient

    from cli.main import main

    space = tmp_path / "space.yaml"
    space.write_text("num_samples: 1\nmax_concurrent: 1\nscheduler: {grace_period: 2, reduction_factor: 2}\n"
                     "parameters:\n"
                     "  head_prior: {grid: [0.03, 0.9]}\n"
                     "  w_iou: {loguniform: [0.5, 2.0]}\n"
                     "  dilation_rates: {choice: [[1, 2, 4], [1, 3, 5]]}\n" + TINY_TRAINING)
    code = main(["tune", "--data", str(dataset), "--config", str(space), "--set", "epochs=3", "--set", "image_size=128",
                 "--set", "lr=1.0e-7", "--set", f"storage_path={tmp_path / 'ray_results'}", "--name", "search",
                 "--tracking-uri", tracking_uri])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "stopped early" in out and "registered models:/jaffnet/1 with alias candidate, champion" in out
    assert "2 configurations x 1 seed(s) (0) = 2 trials" in out
    assert "over 3 epochs, grace 2 epoch(s) (set in the search file)" in out and "search metric: val_mae (min)" in out

    client = MlflowClient(tracking_uri)
    parent = client.search_runs(["1"], filter_string="attributes.run_name = 'search'")[0]
    rows = json.loads(Path(client.download_artifacts(parent.info.run_id, "trials.json", str(tmp_path))).read_text())
    assert len(rows) == 2 and {row["status"] for row in rows} <= {"completed", "stopped early"}
    assert sum(row["status"] == "stopped early" and row["epochs_run"] < 3 for row in rows) >= 1
    winner = min(rows, key=lambda row: row["best"])
    assert winner["head_prior"] == 0.03 and winner["epochs_run"] == 3
    # Each trial records its configuration (in grid order) and its training seed.
    assert sorted((row["configuration"], row["head_prior"], row["seed"]) for row in rows) == [(0, 0.03, 0), (1, 0.9, 0)]
    groups = json.loads(Path(client.download_artifacts(parent.info.run_id, "configurations.json",
                                                       str(tmp_path))).read_text())
    by_configuration = sorted(rows, key=lambda row: row["configuration"])
    assert [group["values"] for group in groups] == [[row["best"]] for row in by_configuration]

    # One nested run per trial, with the trial's params and one metric point per epoch run.
    trials = nested_runs(client, parent.info.run_id)
    assert set(trials) == {row["trial_id"] for row in rows}
    for row in rows:
        run = trials[row["trial_id"]]
        assert run.data.params == {k: str(row[k]) for k in ("configuration", "seed", "head_prior", "w_iou",
                                                            "dilation_rates")}
        history = client.get_metric_history(run.info.run_id, "val_mae")
        assert [m.step for m in history] == list(range(row["epochs_run"]))
        assert run.data.tags["tune.status"] == row["status"]

    # The registered version is the winner: logged in its nested run, params equal.
    version = client.get_model_version_by_alias("jaffnet", "candidate")
    assert client.get_model_version_by_alias("jaffnet", "champion").version == version.version
    assert version.run_id == trials[winner["trial_id"]].info.run_id
    assert client.get_run(version.run_id).data.params["dilation_rates"] == str(winner["dilation_rates"])
    assert version.tags["tune.trial_id"] == winner["trial_id"] and version.tags["param.head_prior"] == "0.03"
    assert version.tags["param.seed"] == "0"

    from pipelines.registry import load_model

    loaded = load_model("models:/jaffnet@candidate")
    assert loaded.model.config["dilation_rates"] == winner["dilation_rates"]
    assert loaded.metadata["train_config"]["w_iou"] == winner["w_iou"]


class CtrlCOnce(Stopper):
    """Presses Ctrl+C (SIGINT to this process) at the search's first result, once: the
    marker file outlives the copy of this stopper that Tune pickles and restores."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __call__(self, trial_id, result):
        if not Path(self.marker).exists():
            Path(self.marker).touch()
            # Tune's handler saves the state and ends the run. Sent to the main thread, where a terminal's
            # Ctrl+C lands in `jaffnet tune`. (This is where the suite used to die of SIGSEGV once the INT8
            # tests had left the main thread a freed signal stack: jaffnet/inference/openvino_runtime.py.)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        return False

    def stop_all(self):
        return False


def test_interrupted_search_resumes_and_survives_a_failed_trial(dataset, tracking_uri, tmp_path):
    """Trial 0 is interrupted after epoch 1 and resumes from its checkpoint; trial 1 fails
    (batch larger than the train split) without ending the search. The search optimises
    the line's metric, overkill at a stated escape target (val holds good and defective frames)."""
    from mlflow import MlflowClient

    from tuning.search import plan_search, resume_search, run_search
    from tuning.search_space import load_search_space, resolve_training

    path = tmp_path / "space.yaml"
    path.write_text("num_samples: 1\nmax_concurrent: 1\nparameters:\n  batch_size: {grid: [2, 64]}\n"
                    + TINY_TRAINING.replace("  batch_size: 2\n", "")
                    .replace("best_metric: val_mae", "best_metric: val_overkill_at_escape"))
    space = load_search_space(path)
    base = resolve_training(space, overrides=["epochs=2", f"storage_path={tmp_path / 'ray_results'}"])
    plan = plan_search(dataset, space, base, name="resumable")

    first = run_search(plan, stop=CtrlCOnce(tmp_path / "interrupted"))
    assert not first.complete and first.publication is None
    client = MlflowClient(tracking_uri)
    assert client.search_registered_models() == []

    second = resume_search(plan.experiment_path)
    assert second.complete
    by_batch = {row.params["batch_size"]: row for row in second.table.rows}
    assert by_batch[2].status == "completed" and by_batch[2].epochs_run == 2
    assert by_batch[64].status == "error" and "no full batch" in by_batch[64].error
    assert second.table.metric == "val_overkill_at_escape" and 0 <= by_batch[2].best <= 1
    assert second.publication.version == "1"
    assert client.get_run(plan.parent_run_id).data.params["search.escape_target"] == "0.05"

    # Same parent run, no duplicate trial runs; trial 0's epochs split over both attempts.
    trials = nested_runs(client, plan.parent_run_id)
    assert set(trials) == {row.trial_id for row in second.table.rows}
    run_id = trials[by_batch[2].trial_id].info.run_id
    # Continued from its checkpoint, not restarted: no epoch is logged twice, and one the trainer
    # finished after Ctrl+C, unseen by Tune, comes from its checkpoint's report.
    steps = [m.step for m in client.get_metric_history(run_id, "val_mae")]
    assert sorted(steps) == list(range(by_batch[2].epochs_run))
    assert client.get_run(plan.parent_run_id).data.tags["tune.outcome"] == "finished"
