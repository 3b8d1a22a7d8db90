"""Datasets, checkpoints and MLflow artifacts in S3, end to end against a real S3 API.

moto's server runs in this process on 127.0.0.1 (a free port), speaking S3 over HTTP
to pyarrow (the dataset reader and writer, Ray Train's checkpoints) and boto3 (MLflow's
artifact store) exactly as AWS would; credentials and the endpoint reach them only
through the AWS_* environment variables, as on a cluster. Nothing is mocked inside
the clients.
"""

from __future__ import annotations

import json
import logging
import math

import pytest

from pipelines import registry, storage
from tests.conftest import start_test_ray
from tests.pipelines.training.test_training_run import TINY

pytestmark = pytest.mark.integration  # a local S3 server (moto) and Ray

BUCKET = "jaffnet-test"
DATASET = f"s3://{BUCKET}/datasets/tiny"
RESULTS = f"s3://{BUCKET}/ray_results"
ARTIFACTS = f"s3://{BUCKET}/mlflow"
MODEL_NAME = "jaffnet-s3"


@pytest.fixture(scope="module")
def s3_env():
    """A moto S3 server on 127.0.0.1 with one bucket, and the AWS_* variables pointing at it.

    Ray is (re)started inside that environment: its workers inherit the environment of the
    process that starts Ray, fixed at ``ray.init``. Afterwards the suite's Ray instance is
    restarted without it, if one was running.
    """
    import boto3
    import ray
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    host, port = server.get_host_and_port()
    ray_was_running = ray.is_initialized()
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL"):
                patch.delenv(name, raising=False)
            patch.setenv("AWS_ACCESS_KEY_ID", "testing")
            patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
            patch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
            boto3.client("s3").create_bucket(Bucket=BUCKET)
            ray.shutdown()
            start_test_ray()
            try:
                yield boto3.client("s3")
            finally:
                ray.shutdown()
    finally:
        server.stop()
        if ray_was_running:
            start_test_ray()


def keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def stored_rows(location: str) -> int:
    import pyarrow.dataset as pads

    filesystem, path = storage.filesystem(location)
    return pads.dataset(path, filesystem=filesystem, format="parquet").count_rows()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("object-storage")


@pytest.fixture(scope="module")
def ingested(s3_env, workdir):
    from pipelines.data.ingestion import ingest
    from pipelines.data.synth import synthesize

    synthesize(workdir / "synth", count=24, size=64, seed=0)
    return ingest(workdir / "synth", DATASET, "folder", seed=0, val_fraction=0.2, test_fraction=0.2)


@pytest.fixture(scope="module")
def tracking_uri(s3_env, workdir):
    import mlflow

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)  # anything MLflow or Ray wrongly wrote locally would land here
        yield registry.configure_tracking(f"sqlite:///{workdir / 'mlflow.db'}")
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def trained(ingested, tracking_uri):
    from pipelines.training import load_config, train

    cfg = load_config(None, [*TINY, "epochs=1", f"storage_path={RESULTS}", f"artifact_location={ARTIFACTS}",
                             "experiment=s3-test", f"model_name={MODEL_NAME}"])
    return train(cfg, DATASET)


def test_ingest_writes_a_readable_dataset_into_the_bucket(s3_env, ingested):
    from pipelines.data.dataset import read_manifest

    assert ingested.dataset_dir == DATASET
    written = keys(s3_env, "datasets/")
    assert "datasets/tiny/manifest.json" in written and "datasets/tiny/.jaffnet-ingest" in written
    assert any(key.startswith("datasets/tiny/data/") and key.endswith(".parquet") for key in written)
    assert not any(".tiny.tmp-" in key for key in written)  # the temporary prefix is gone
    manifest = read_manifest(DATASET)
    assert manifest == ingested.manifest and manifest["arguments"]["out"] == DATASET
    assert manifest["num_samples"] == 24 and all(manifest["totals"].values())


def test_ingest_replaces_only_its_own_datasets_in_the_bucket(s3_env, ingested, workdir):
    from pipelines.data.ingestion import IngestError, ingest
    from pipelines.data.dataset import read_manifest

    with pytest.raises(IngestError, match="already exists"):
        ingest(workdir / "synth", DATASET, "folder", seed=0)
    s3_env.put_object(Bucket=BUCKET, Key="notes/keep.txt", Body=b"not a dataset")
    with pytest.raises(IngestError, match="was not written by `jaffnet ingest`"):
        ingest(workdir / "synth", f"s3://{BUCKET}/notes", "folder", overwrite=True)
    assert keys(s3_env, "notes/") == ["notes/keep.txt"]
    with pytest.raises(storage.StorageError, match="bucket.s root"):
        ingest(workdir / "synth", f"s3://{BUCKET}", "folder")

    replaced = ingest(workdir / "synth", DATASET, "folder", seed=1, val_fraction=0.2, test_fraction=0.2,
                      overwrite=True)
    assert read_manifest(DATASET)["arguments"]["seed"] == 1
    assert replaced.manifest["content_hash"] != ingested.manifest["content_hash"]  # other splits
    assert stored_rows(f"{DATASET}/data") == 24  # no file of the old dataset left beside the new ones
    ingest(workdir / "synth", DATASET, "folder", seed=0, val_fraction=0.2, test_fraction=0.2, overwrite=True)
    assert read_manifest(DATASET)["content_hash"] == ingested.manifest["content_hash"]


def test_trains_with_checkpoints_and_model_artifacts_in_the_bucket(s3_env, trained, workdir):
    from mlflow import MlflowClient

    pub = trained.publication
    assert pub.checkpoint_path.startswith(f"{RESULTS}/{trained.run_name}/")
    checkpoints = keys(s3_env, f"ray_results/{trained.run_name}/")
    assert any(key.endswith("/model.safetensors") for key in checkpoints)
    run = MlflowClient().get_run(trained.mlflow_run_id)
    assert run.info.artifact_uri.startswith(f"{ARTIFACTS}/")
    assert run.data.params["dataset_dir"] == DATASET
    assert any(key.endswith("model.safetensors") for key in keys(s3_env, "mlflow/"))
    assert sorted(path.name for path in workdir.iterdir()) == ["mlflow.db", "synth"]  # nothing else local


def test_a_run_name_already_in_the_bucket_is_refused(trained, tracking_uri):
    from pipelines.training import load_config, train

    cfg = load_config(None, [*TINY, f"storage_path={RESULTS}", "experiment=s3-test"])
    with pytest.raises(ValueError, match="already exists"):
        train(cfg, DATASET, run_name=trained.run_name)


def test_the_registered_model_evaluates_on_the_dataset_in_the_bucket(trained, tracking_uri, tmp_path):
    from cli.main import main
    from pipelines.data.dataset import read_manifest
    from pipelines.evaluation.evaluate import FRAME_COLUMNS

    pub = trained.publication
    loaded = registry.load_model(f"models:/{MODEL_NAME}@candidate")  # downloaded from the bucket
    assert loaded.version == pub.version and loaded.metadata["image_size"] == 32
    report = tmp_path / "evaluation.json"
    out = tmp_path / "report"
    assert main(["evaluate", "--model", pub.model_uri, "--data", DATASET, "--split", "test",
                 "--json", str(report), "--out", str(out), "--tracking-uri", tracking_uri]) == 0
    evaluation = json.loads(report.read_text())
    assert evaluation["count"] == read_manifest(DATASET)["totals"]["test"]
    assert all(math.isfinite(value) for value in evaluation["rows"]["overall"].values())
    frames_csv = (out / "frames.csv").read_text().splitlines()
    assert frames_csv[0] == ",".join(FRAME_COLUMNS) and len(frames_csv) == evaluation["count"] + 1
    assert {"score_histogram.png", "operating_table.txt", "operating_table.json"} <= {p.name for p in out.iterdir()}


def test_a_search_keeps_its_state_and_trial_checkpoints_in_the_bucket(s3_env, trained, tracking_uri, workdir):
    from tuning.search import SearchError, SearchPlan, plan_search, run_search
    from tuning.search_space import load_search_space, resolve_training

    path = workdir / "space.yaml"
    path.write_text("num_samples: 1\nmax_concurrent: 1\nparameters:\n  lr: {grid: [0.01]}\n"
                    "training: {width: 0.125, image_size: 32, batch_size: 2, num_workers: 1, cpus_per_worker: 0.25, "
                    "num_overlays: 0, best_metric: val_mae, max_failures: 0}\n")
    space = load_search_space(path)
    base = resolve_training(space, overrides=["epochs=1", f"storage_path={RESULTS}", "experiment=s3-test",
                                              f"artifact_location={ARTIFACTS}", "model_name=jaffnet-s3-tune"])
    plan = plan_search(DATASET, space, base, name="search")
    assert plan.experiment_path == f"{RESULTS}/search" and plan.dataset_dir == DATASET
    outcome = run_search(plan)
    assert outcome.complete and outcome.publication.checkpoint_path.startswith(f"{RESULTS}/search/train_runs/")
    assert SearchPlan.load(plan.experiment_path).parent_run_id == plan.parent_run_id
    assert any(key.endswith("/model.safetensors") for key in keys(s3_env, "ray_results/search/train_runs/"))
    with pytest.raises(SearchError, match="exists"):
        plan_search(DATASET, space, base, name="search")
    path.unlink()
    assert sorted(path.name for path in workdir.iterdir()) == ["mlflow.db", "synth"]  # nothing else local


def test_an_experiment_keeps_its_artifact_location(trained, tracking_uri):
    with pytest.raises(ValueError, match="keeps its artifacts in"):
        registry.set_experiment("s3-test", f"s3://{BUCKET}/elsewhere")


@pytest.mark.parametrize("location, message", [
    ("s3://AKIA:secret@bucket/ds", "credentials"),
    ("s3://bucket/ds?endpoint_override=x", "options"),
    ("s3://", "names no bucket"),
])
def test_malformed_locations_are_refused_without_echoing_secrets(location, message):
    from pipelines.training import load_config

    with pytest.raises(storage.StorageError, match=message) as info:
        storage.resolve(location)
    assert "secret" not in str(info.value)
    with pytest.raises(ValueError, match="storage_path") as info:
        load_config(None, [f"storage_path={location}"])
    assert "secret" not in str(info.value)
