import pytest

from cli.main import main


@pytest.fixture()
def no_training(monkeypatch):
    import pipelines.training.run as run

    def forbidden(*args, **kwargs):
        raise AssertionError("training must not start")

    monkeypatch.setattr(run, "train", forbidden)


def test_print_config_shows_merged_values(capsys):
    assert main(["train", "--print-config", "--set", "width=0.5", "--set", "dilation_rates=[1,3]"]) == 0
    out = capsys.readouterr().out
    assert "width: 0.5\n" in out and "dilation_rates: [1, 3]\n" in out


@pytest.mark.parametrize("override, key", [("lr=-1", "lr"), ("widht=1", "widht"), ("image_size=33", "image_size")])
def test_bad_config_fails_before_any_ray_work(no_training, tmp_path, capsys, override, key):
    assert main(["train", "--data", str(tmp_path), "--set", override]) == 2
    assert f"'{key}'" in capsys.readouterr().err


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope"), "--set", "epochs=1"]) == 2
    assert "not an ingested dataset" in capsys.readouterr().err
    (tmp_path / "ds" / "data").mkdir(parents=True)
    (tmp_path / "ds" / "manifest.json").write_text("{}")
    assert main(["train", "--data", str(tmp_path / "ds"), "--data", str(tmp_path / "nope")]) == 2
    assert "nope is not an ingested dataset" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "ds"), "--data", str(tmp_path / "ds")]) == 2
    assert "given twice" in capsys.readouterr().err


def test_train_needs_data(capsys):
    assert main(["train"]) == 2
    assert "--data" in capsys.readouterr().err


@pytest.mark.parametrize("arguments", [["--extra-test-frames", "-1"], ["--count", "-5"]])
def test_demo_frame_counts_are_checked_before_any_ray_work(monkeypatch, tmp_path, capsys, arguments):
    import pipelines.runtime as runtime

    monkeypatch.setattr(runtime, "init_ray", lambda *a, **k: pytest.fail("Ray must not start"))
    assert main(["demo", "--out", str(tmp_path / "out"), *arguments]) == 2
    assert "extra test samples >= 0" in capsys.readouterr().err
