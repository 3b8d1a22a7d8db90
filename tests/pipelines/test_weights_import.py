"""``jaffnet import-weights --from authors``: a file in the authors' naming becomes a
registered model version that loads with the same outputs."""

import hashlib
import os

import pytest
import torch
from safetensors.torch import save_file

from cli.main import main
from jaffnet import JAFFNet, authors_weights
from pipelines import registry
from tests.authors_naming import randomize, to_authors_naming

WIDTH = 0.125  # the mapping is width-independent; tests/jaffnet/test_authors_weights.py checks full size


class Payload:
    """What a hostile "weights" file could run on unpickling."""

    def __reduce__(self):
        return (os.system, ("echo unpickled > /dev/null",))


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)  # ./mlruns for the artifacts
    # The authors' JAFFNet() is full size; a narrow one keeps the test fast.
    monkeypatch.setitem(authors_weights.AUTHORS_CONFIG, "width", WIDTH)
    yield tmp_path
    mlflow.set_tracking_uri(None)


def tracking(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_import_registers_a_version_with_identical_outputs_and_its_provenance(workdir, capsys):
    from mlflow import MlflowClient

    model = randomize(JAFFNet(width=WIDTH))
    path = workdir / "dagm.pth"
    torch.save(to_authors_naming(model.state_dict()), path)

    assert main(["import-weights", str(path), "--from", "authors", "--name", "authors-test",
                 "--tracking-uri", tracking(workdir)]) == 0
    assert "registered models:/authors-test/1" in capsys.readouterr().out

    loaded = registry.load_model("models:/authors-test/1")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    meta = loaded.metadata
    assert (meta["imported_from"], meta["imported_file"], meta["imported_sha256"]) == ("authors", "dagm.pth", digest)
    assert meta["model_config"] == model.config and meta["image_size"] == 256
    assert loaded.contract.image_size == 256 and loaded.contract.mode == "resize"
    assert loaded.contract.normalization == "authors"  # their data_loader's, so their probabilities
    assert not loaded.rule.calibrated and loaded.rule.pixel_threshold == 0.5
    version = MlflowClient().get_model_version("authors-test", "1")
    assert version.tags["imported_from"] == "authors" and version.tags["imported_sha256"] == digest
    assert version.tags["calibrated"] == "false" and version.tags["input_normalization"] == "authors"
    assert not version.aliases  # neither candidate nor champion moves to an unvalidated import


def test_safetensors_file_is_read_and_metadata_follows_image_size(tmp_path):
    from pipelines.weights_import import import_metadata, read_weights

    model = JAFFNet(width=WIDTH)
    path = tmp_path / "authors.safetensors"
    save_file({k: v.contiguous() for k, v in to_authors_naming(model.state_dict()).items()}, str(path))
    state = authors_weights.from_authors_state_dict(read_weights(path), model.config)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    meta = import_metadata("n", "authors", path, "0" * 64, 512, model.config)
    assert meta["image_size"] == meta["input_contract"]["image_size"] == 512
    assert meta["input_contract"]["normalization"] == "authors"
    assert meta["decision_rule"]["calibrated"] is False and "NOT calibrated" in meta["note"]


def test_pickled_objects_are_refused_without_unpickling(workdir, capsys):
    state = to_authors_naming(JAFFNet(width=WIDTH).state_dict())
    state["payload"] = Payload()
    path = workdir / "hostile.pth"
    torch.save(state, path)

    assert main(["import-weights", str(path), "--from", "authors", "--tracking-uri", tracking(workdir)]) == 2
    err = capsys.readouterr().err
    assert "holds pickled Python objects besides tensors" in err and "weights-only" in err
    assert "Traceback" not in err and "weights_only` set to `False" not in err
    assert not (workdir / "mlruns").exists()  # nothing was logged


def test_a_file_that_is_not_the_authors_model_names_its_keys(workdir, capsys):
    state = to_authors_naming(JAFFNet(width=WIDTH).state_dict())
    del state["jaff2.alpha"]
    state["decoder1_g.0.weight"] = torch.zeros(1)
    path = workdir / "other.pth"
    torch.save(state, path)

    assert main(["import-weights", str(path), "--from", "authors", "--tracking-uri", tracking(workdir)]) == 2
    err = capsys.readouterr().err
    assert "unknown keys: decoder1_g.0.weight" in err and "missing keys: jaff2.alpha" in err
    assert "Traceback" not in err
