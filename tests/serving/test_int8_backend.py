"""``backend: int8``: the model deployment serves the INT8 export logged to the version's run,
and fails at start, saying what to run, when there is none or it holds other weights."""

import json

import numpy as np
import pytest

for _runtime in ("openvino", "nncf", "onnxscript"):  # quantize_int8: ONNX export -> OpenVINO + NNCF
    pytest.importorskip(_runtime, reason="the int8 backend needs the openvino extra (openvino, nncf) and the "
                                         "ONNX exporter (onnxscript)")

pytestmark = pytest.mark.slow  # quantises a model to INT8 (~20 s)
SIZE = 64


def _register(name: str, seed: int) -> tuple[str, str]:
    """A random width-0.25 model registered in a run of its own: (models:/ URI, run id)."""
    import mlflow
    import torch

    from jaffnet.contract import InputContract
    from jaffnet.decision import DecisionRule
    from jaffnet.model import JAFFNet
    from pipelines import registry

    torch.manual_seed(seed)
    metadata = {"image_size": SIZE, "input_contract": InputContract(image_size=SIZE).to_dict(),
                "decision_rule": DecisionRule(pixel_threshold=0.5, image_threshold=0.5).to_dict()}
    registry.set_experiment("int8-backend")  # not whichever experiment an earlier test left active
    with mlflow.start_run() as run:
        info = registry.log_model(JAFFNet(width=0.25).eval(), metadata)
    registry.register(info.model_uri, name)
    return f"models:/{name}@candidate", run.info.run_id


def _deployment(uri: str, tracking: str):
    from serving.model_deployment import ModelDeployment

    # The deployment's class itself: its constructor is what a replica runs at start.
    return ModelDeployment.func_or_class({"model_uri": uri, "tracking_uri": tracking, "backend": "int8"})


def test_a_version_without_an_int8_export_fails_at_start_naming_the_command(tracking, tmp_path, monkeypatch):
    from serving.model_deployment import ModelLoadError

    monkeypatch.chdir(tmp_path)
    uri, _ = _register("no-int8", seed=0)
    with pytest.raises(ModelLoadError, match=r"no INT8 export.*jaffnet export --model models:/no-int8@candidate "
                                             r"--format int8"):
        _deployment(uri, tracking)


def test_int8_serves_the_runs_export_and_refuses_one_of_other_weights(tracking, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from jaffnet.inference.quantization import quantize_int8
    from pipelines.registry import INT8_ARTIFACT_PATH, INT8_REPORT_FILE, load_model
    from serving.model_deployment import ModelLoadError

    monkeypatch.chdir(tmp_path)
    uri, run_id = _register("with-int8", seed=0)
    other_uri, other_run_id = _register("other-weights", seed=1)
    # An export as `jaffnet export --format int8` publishes it (calibration here on random
    # inputs: this test is about loading, the gate has its own tests).
    rng = np.random.default_rng(0)
    export = tmp_path / "export"
    export.mkdir()
    file_set = quantize_int8(load_model(uri).model, [rng.normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)],
                             export, metadata={}, image_size=SIZE)
    (export / INT8_REPORT_FILE).write_text(json.dumps({"passed": True, "extra": {
        "file_set": file_set.relative_to(export).as_posix()}}))
    client = MlflowClient()
    for run in (run_id, other_run_id):  # the other version's run gets a file set of different weights
        client.log_artifacts(run, str(export), artifact_path=INT8_ARTIFACT_PATH)

    deployment = _deployment(uri, tracking)
    assert deployment.card["backend"] == "int8" and deployment.card["device"] == "cpu"
    assert deployment.predictor(np.zeros((2, 3, SIZE, SIZE), np.float32)).shape == (2, SIZE, SIZE)

    with pytest.raises(ModelLoadError, match="not quantised from this model's weights"):
        _deployment(other_uri, tracking)
