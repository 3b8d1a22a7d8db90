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


def test_log_register_and_load_by_alias(tracking):
    import mlflow

    model = JAFFNet(width=0.125).eval()
    with mlflow.start_run() as run:
        info = registry.log_model(model, {"threshold": 0.4, "image_size": 64})
    version = registry.register(info.model_uri, "jaffnet-test", tags={"val_mae": 0.1})
    loaded = registry.load_model("models:/jaffnet-test@candidate")
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
