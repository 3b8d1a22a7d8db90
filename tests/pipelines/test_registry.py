import pytest
import torch

from jaffnet import JAFFNet
from jaffnet.io import save_pretrained
from pipelines import registry


@pytest.fixture()
def tracking(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    uri = registry.configure_tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("registry-test")
    yield uri
    mlflow.set_tracking_uri(None)


def test_log_register_and_load_by_alias(tracking, capfd):
    import mlflow

    model = JAFFNet(width=0.125).eval()
    with mlflow.start_run() as run:
        info = registry.log_model(model, {"threshold": 0.4, "image_size": 64})
    version = registry.register(info.model_uri, "jaffnet-test", tags={"val_mae": 0.1})
    loaded = registry.load_model("models:/jaffnet-test@candidate")
    console = "".join(capfd.readouterr())
    # neither MLflow's per-log signature warning nor an artifact progress bar per load
    assert "Failed to infer model signature" not in console and "Downloading artifacts" not in console
    assert (loaded.name, loaded.version, loaded.run_id) == ("jaffnet-test", str(version.version), run.info.run_id)
    assert loaded.metadata == {"threshold": 0.4, "image_size": 64}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    assert registry.load_model(f"models:/jaffnet-test/{version.version}").version == str(version.version)
    # The MLflow pyfunc flavour works too, through the same safe loader.
    pyfunc = mlflow.pyfunc.load_model("models:/jaffnet-test@candidate")
    probs = pyfunc.predict(x.numpy())
    assert probs.shape == (1, 64, 64) and torch.allclose(torch.from_numpy(probs), torch.sigmoid(model(x))[:, 0])


def test_missing_alias_or_model_is_a_clear_error(tracking):
    with pytest.raises(LookupError, match="models:/nope@champion"):
        registry.load_model("models:/nope@champion")


def test_local_directory(tmp_path):
    save_pretrained(JAFFNet(width=0.125), tmp_path / "m", metadata={"threshold": 0.5})
    assert registry.load_model(tmp_path / "m").metadata["threshold"] == 0.5
    with pytest.raises(FileNotFoundError, match="no JAFFNet model"):
        registry.load_model(tmp_path)


def test_the_input_contract_and_rule_round_trip_through_the_registry(tracking):
    import mlflow

    from jaffnet.contract import InputContract
    from jaffnet.decision import DecisionRule

    contract = InputContract(image_size=96, mode="tile", tile_overlap=0.5)
    rule = DecisionRule(pixel_threshold=0.41, image_threshold=0.63, min_defect_area_px=5)
    with mlflow.start_run():
        info = registry.log_model(JAFFNet(width=0.125), {"input_contract": contract.to_dict(),
                                                         "decision_rule": rule.to_dict(), "threshold": 0.41})
    registry.register(info.model_uri, "contract-test")
    loaded = registry.load_model("models:/contract-test@candidate")
    assert loaded.contract == contract and loaded.rule == rule


def test_a_model_registered_before_contracts_loads_as_resize(tracking):
    import mlflow

    with mlflow.start_run():
        info = registry.log_model(JAFFNet(width=0.125), {"threshold": 0.4, "image_size": 64})
    registry.register(info.model_uri, "legacy-test")
    loaded = registry.load_model("models:/legacy-test@candidate")
    assert loaded.contract.mode == "resize" and loaded.contract.image_size == 64
    assert loaded.rule.image_threshold == 0.4 and not loaded.rule.calibrated


def test_registry_errors_never_echo_a_database_password(tracking, monkeypatch):
    import mlflow

    assert registry.redact("postgresql://mlflow:s3cret@db:5432/mlflow") == "postgresql://mlflow:***@db:5432/mlflow"
    assert registry.redact("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    monkeypatch.setattr(mlflow, "get_registry_uri", lambda: "mysql://admin:hunter2@10.0.0.5/registry")
    monkeypatch.setattr("mlflow.MlflowClient.get_model_version_by_alias",
                        lambda *args: (_ for _ in ()).throw(mlflow.exceptions.MlflowException("no such model")))
    with pytest.raises(LookupError) as info:
        registry.resolve_model_version("models:/jaffnet@champion")
    assert "hunter2" not in str(info.value) and "admin:***@10.0.0.5" in str(info.value)
