"""End to end on a tiny dataset: 2-worker CPU DDP, MLflow in a temporary SQLite store.

Each Ray Train run costs seconds of worker start-up, so the module trains three times in all:
one module-scoped run (with a weight average and an injected worker failure) feeds most tests,
and the resume test extends that same run and so comes last; one tile-mode run on a mix of two
datasets feeds the tile and the mix tests. The worker failure is injected with the test hook
``pipelines.training.loop.FAIL_ONCE_ENV`` (an environment variable the driver reads), not a
config key.
"""

from pathlib import Path

import pytest
import torch

from pipelines import registry
from pipelines.training.checkpointing import TRAINING_STATE_FILE

MODEL_NAME = "jaffnet-test"
TINY = ["width=0.125", "image_size=32", "epochs=2", "batch_size=2", "num_workers=2", "cpus_per_worker=0.5",
        "torch_threads=1", "num_overlays=2", "experiment=train-test", f"model_name={MODEL_NAME}"]
# The module's main run also keeps a weight average: what it validates and publishes is the average.
TRAINED = [*TINY, "ema_decay=0.9"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("training")


@pytest.fixture(scope="module")
def tiny_dataset(ray_session, workdir):
    from tests.datasets import make_tiny_dataset

    return make_tiny_dataset(workdir / "data", count=24, size=64)


@pytest.fixture(scope="module")
def tracking_uri(workdir):
    import mlflow

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)  # MLflow puts artifacts under ./mlruns
        yield registry.configure_tracking(f"sqlite:///{workdir / 'mlflow.db'}")
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def trained(tiny_dataset, tracking_uri, workdir):
    from pipelines.training import load_config, train

    from pipelines.training.memory import RayMemoryProbe

    from pipelines.training.loop import FAIL_ONCE_ENV

    cfg = load_config(None, [*TRAINED, f"storage_path={workdir / 'ray_results'}"])
    probe = RayMemoryProbe(workdir / "memory.jsonl")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FAIL_ONCE_ENV, "1")  # the last rank crashes once at epoch 1
        outcome = train(cfg, tiny_dataset, callbacks=(probe,))
    outcome.memory = probe.samples()
    return outcome


def _training_state(checkpoint) -> dict:
    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / TRAINING_STATE_FILE, weights_only=True)


def _adam_steps(state: dict) -> int:
    return int(next(iter(state["optimizer"]["state"].values()))["step"])


def test_registers_a_version_with_aliases_and_serving_metadata(trained):
    from mlflow import MlflowClient

    pub = trained.publication
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(MODEL_NAME, "candidate").version) == pub.version
    assert pub.promoted and str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == pub.version
    tags = client.get_model_version(MODEL_NAME, pub.version).tags
    assert {"dataset_manifest", "git_commit", "val_weighted_f", "val_mae", "threshold", "image_threshold",
            "val_escape_rate", "input_mode", "input_image_size"} <= set(tags)
    assert loaded_contract_and_rule(tags) == ("resize", float(tags["image_threshold"]))
    loaded = registry.load_model(f"models:/{MODEL_NAME}@candidate")
    assert loaded.run_id == trained.mlflow_run_id
    assert loaded.metadata["image_size"] == 32 and loaded.metadata["model_name"] == MODEL_NAME
    assert 0.0 <= loaded.metadata["threshold"] <= 1.0
    assert loaded.metadata["metrics"]["val_mae"] == pytest.approx(pub.metrics["val_mae"])
    assert loaded.contract.mode == "resize" and loaded.contract.image_size == 32
    assert loaded.rule.pixel_threshold == loaded.metadata["threshold"] and loaded.rule.calibrated
    assert loaded.rule.image_threshold == pytest.approx(pub.metrics["val_image_threshold"])
    assert loaded.model.config["width"] == 0.125
    calibration = loaded.metadata["calibration"]  # escape-first by default; this tiny val is too small for it
    assert calibration["calibration_set"] == {"split": "val", "dataset_manifest": loaded.metadata["dataset_manifest"]}
    assert calibration["method"] == "escape_cost" and "needed to support max_escape_rate" in calibration["warnings"][0]


def test_one_training_dataset_means_one_split_coordinator_for_the_whole_run(trained):
    # Per-epoch datasets kept one ~250 MB coordinator per epoch alive until the run ended.
    assert [sample.epoch for sample in trained.memory] == [0, 1]
    assert [sample.split_coordinators for sample in trained.memory] == [1, 1]


def test_logs_params_epoch_metrics_and_overlays(trained, tiny_dataset):
    from mlflow import MlflowClient

    client = MlflowClient()
    run = client.get_run(trained.mlflow_run_id)
    assert run.data.params["width"] == "0.125" and run.data.params["epochs"] == "2"
    assert run.data.params["dataset_dir"] == str(tiny_dataset) and run.data.params["data.0.dir"] == str(tiny_dataset)
    for metric in ("train_loss", "val_loss", "val_mae", "val_weighted_f", "val_s_measure", "val_mean_e",
                   "val_image_auroc", "val_image_auroc_low", "val_image_auroc_high", "val_escape_rate",
                   "val_overkill_rate", "val_image_threshold"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [0, 1], metric
    per_class = [key for key in run.data.metrics if key.startswith("val_class_")]
    assert any(key.endswith("_escape_rate") for key in per_class)  # image-level rates per defect class
    overlays = [a.path for a in client.list_artifacts(run.info.run_id, "overlays")]
    assert len(overlays) == 1
    pngs = client.list_artifacts(run.info.run_id, overlays[0])
    assert 1 <= len(pngs) <= 2 and all(a.path.endswith(".png") for a in pngs)
    report = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run.info.run_id, "report_val")}
    assert {"frames.csv", "score_histogram.png", "operating_table.txt", "operating_table.json"} <= report


def loaded_contract_and_rule(tags: dict) -> tuple[str, float]:
    return tags["input_mode"], float(tags["image_threshold"])


@pytest.fixture(scope="module")
def line_dataset(tiny_dataset, workdir):
    """The tiny dataset's frames as a line saw them: logged by the endpoint, reviewed by operators
    (defects confirmed with the model's mask or boxed, good parts passed), ingested from the log."""
    import cv2
    import numpy as np

    from pipelines.data.reviewed_frames import ingest_decision_log
    from tests.pipelines.data.decision_logs import Logged, write_log

    synth = workdir / "data" / "synth"
    entries = []
    for index, path in enumerate(sorted((synth / "images").glob("*.png"))[:12]):
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        truth = cv2.imread(str(synth / "masks" / path.name), cv2.IMREAD_GRAYSCALE) > 0
        rows, cols = np.nonzero(truth)
        if not truth.any():
            entries.append(Logged("OK", "OK", image=image, line="L7"))
        elif index % 2:
            box = {"x": int(cols.min()), "y": int(rows.min()), "width": int(np.ptp(cols)) + 1,
                   "height": int(np.ptp(rows)) + 1}
            entries.append(Logged("OK", "NG", regions=[box], image=image, line="L7"))
        else:
            entries.append(Logged("NG", "NG", image=image, model_mask=truth, line="L7"))
    write_log(workdir / "line_log", entries)
    return ingest_decision_log(workdir / "line_log", workdir / "line_data", val_fraction=0.2,
                               test_fraction=0.2).dataset_dir


@pytest.fixture(scope="module")
def tiled_mix(tiny_dataset, line_dataset, tracking_uri, workdir):
    """One run for two features (a Ray Train run costs seconds of worker start-up): 32-px native
    tiles of the 64-px frames, trained on base + line data with the authors' normalisation."""
    from pipelines.training import load_config, train

    cfg = load_config(None, [*TINY, "epochs=1", "input_mode=tile", "normalization=authors", "grad_clip_norm=1.0",
                             "bce_pos_weight=3", "model_name=jaffnet-mix", "experiment=mix",
                             f"storage_path={workdir / 'ray_results_mix'}"])
    return train(cfg, [tiny_dataset, line_dataset])


def test_tile_mode_trains_validates_and_evaluates_through_the_same_tiles(tiled_mix, tiny_dataset, line_dataset):
    """64-px frames, 32-px native tiles: training crops, validation and evaluation agree."""
    from pipelines.evaluation.evaluate import evaluate

    pub = tiled_mix.publication
    evaluation = evaluate(pub.model_uri, [tiny_dataset, line_dataset], "val")  # the val splits it validated on
    assert evaluation.contract["mode"] == "tile" and evaluation.contract["image_size"] == 32
    for key, value in evaluation.metrics()["overall"].items():
        assert value == pytest.approx(pub.metrics[f"val_{key}"], abs=1e-6), key


def test_trains_on_base_and_line_data_with_the_authors_normalisation(tiled_mix, tiny_dataset, line_dataset):
    """Two datasets (--data base --data line): the union of their train splits trains, that of their
    val splits validates, and the run records the mix; the contract keeps the authors' normalisation."""
    from mlflow import MlflowClient

    from pipelines.data.dataset import manifest_hash, mix_manifest_hash, read_manifest

    outcome = tiled_mix
    pub = outcome.publication
    loaded = registry.load_model(pub.model_uri)
    assert loaded.contract.normalization == "authors"

    mix = mix_manifest_hash([str(tiny_dataset), str(line_dataset)])
    assert mix not in (manifest_hash(tiny_dataset), manifest_hash(line_dataset))
    assert mix == mix_manifest_hash([str(line_dataset), str(tiny_dataset)])  # the same mix in any order
    client = MlflowClient()
    assert client.get_model_version("jaffnet-mix", pub.version).tags["dataset_manifest"] == mix
    assert loaded.metadata["dataset_manifest"] == mix
    assert loaded.metadata["calibration"]["calibration_set"]["dataset_manifest"] == mix
    run = client.get_run(outcome.mlflow_run_id)
    params = run.data.params
    assert "dataset_dir" not in params  # one dataset's param (jaffnet export reads it)
    for position, dataset in enumerate((tiny_dataset, line_dataset)):
        assert params[f"data.{position}.dir"] == str(dataset)
        assert params[f"data.{position}.manifest"] == manifest_hash(dataset)
        for split, rows in read_manifest(dataset)["totals"].items():
            assert params[f"data.{position}.rows.{split}"] == str(rows)
        report = client.list_artifacts(run.info.run_id, f"report_val/data.{position}")
        assert "frames.csv" in {a.path.rsplit("/", 1)[-1] for a in report}
    assert params["augment.crop_p"] == "0.7"  # the augmentation is logged with the other params
    assert any(key.startswith("val_class_L7_") for key in run.data.metrics)  # the line's val frames scored


def test_injected_worker_failure_is_survived_without_losing_epochs(trained, workdir):
    assert (workdir / "ray_results" / trained.run_name / "injected_failure_epoch_1").exists()
    final = trained.result.metrics
    assert final["epoch"] == 1 and final["resumed_at_epoch"] == 1  # restarted at epoch 1, not 0
    state = _training_state(trained.result.checkpoint)
    assert [h["epoch"] for h in state["history"]] == [0, 1]
    assert all(0 < h["train_time_s"] < h["epoch_time_s"] for h in state["history"])  # training, then validation


def test_the_checkpoint_records_how_it_was_trained(trained):
    setup = _training_state(trained.result.checkpoint)["setup"]
    assert setup == {"device": "cpu", "ddp_backend": "gloo", "workers": 2, "mixed_precision": False}


def test_evaluate_reproduces_the_logged_validation_metrics(trained, tiny_dataset, tracking_uri):
    """The registered version scores on val exactly what training logged; the run keeps a weight
    average, so this is also what shows that the average is what validation scored."""
    from pipelines.evaluation.evaluate import evaluate

    pub = trained.publication
    evaluation = evaluate(pub.model_uri, tiny_dataset, "val")
    for key, value in evaluation.metrics()["overall"].items():
        assert value == pytest.approx(pub.metrics[f"val_{key}"], abs=1e-6), key
    test = evaluate(f"models:/{MODEL_NAME}@champion", tiny_dataset, "test")
    assert "overall" in test.rows and len(test.rows) >= 2  # per defect class rows too
    assert test.count > 0 and "MAE" in test.table()


def test_a_weight_average_is_what_validation_scores_and_the_registry_gets(trained):
    """ema_decay (the main run's): the average is validated and published; the checkpoint keeps the
    trained weights beside it, and a restarted run continues both (the injected failure restarted
    this run from its epoch-0 checkpoint, average included; the resume test continues it again).
    That validation scored the published weights: test_evaluate_reproduces_the_logged_validation_metrics."""
    from ray.train import Checkpoint

    from jaffnet.io import load_pretrained

    pub = trained.publication
    assert trained.result.metrics["resumed_at_epoch"] == 1  # restored from a checkpoint mid-run
    published = registry.load_model(pub.model_uri).model.state_dict()
    best = Checkpoint(pub.checkpoint_path)  # the checkpoint the registered version was published from
    with best.as_directory() as directory:
        average = load_pretrained(directory).state_dict()
    trained_weights = _training_state(best)["trained_weights"]
    assert published.keys() == average.keys() == trained_weights.keys()
    assert all(torch.equal(published[k], average[k]) for k in average)  # the registry got the average
    assert any(not torch.equal(trained_weights[k], average[k]) for k in average if average[k].is_floating_point())


def test_resume_continues_epochs_and_optimizer_state(trained, tiny_dataset, tracking_uri, workdir):
    """Runs last: it extends the module's run (a third epoch, weight average included)."""
    from mlflow import MlflowClient

    from pipelines.training import load_config, train

    steps_after_two = _adam_steps(_training_state(trained.result.checkpoint))
    cfg = load_config(None, [*TRAINED, f"storage_path={workdir / 'ray_results'}", "epochs=3"])
    resumed = train(cfg, tiny_dataset, resume=True)
    assert resumed.run_name == trained.run_name and resumed.mlflow_run_id == trained.mlflow_run_id
    assert resumed.result.metrics["epoch"] == 2 and resumed.result.metrics["resumed_at_epoch"] == 2
    state = _training_state(resumed.result.checkpoint)
    assert [h["epoch"] for h in state["history"]] == [0, 1, 2]
    assert _adam_steps(state) == steps_after_two * 3 // 2  # Adam's step count carried on
    assert "trained_weights" in state  # the average went on beside the trained weights
    history = MlflowClient().get_metric_history(resumed.mlflow_run_id, "val_mae")
    assert [m.step for m in history] == [0, 1, 2]
    assert int(resumed.publication.version) == int(trained.publication.version) + 1
    champion = MlflowClient().get_model_version_by_alias(MODEL_NAME, "champion").version
    assert str(champion) == (resumed.publication.version if resumed.publication.promoted
                             else trained.publication.version)
