"""The ONNX export (through the CLI; the ``exported`` fixture, shared with test_int8: exporting takes 15-30 s)."""

import json

import numpy as np
import pytest

from cli.main import main
from jaffnet.inference import build_predictor, error_bound, read_onnx_metadata
from tests.jaffnet.inference.conftest import perturbed_model, random_batch

pytestmark = pytest.mark.slow  # exports the full-size model to ONNX (~17 s)


def test_export_writes_a_file_that_names_its_model(model, exported, capsys):
    assert exported.stat().st_size > 100_000
    assert json.loads(read_onnx_metadata(exported)["jaffnet_config"]) == model.config


@pytest.mark.parametrize("shape", [(2, 64, 64), (3, 96, 128)])  # dynamic batch, height and width
def test_onnx_runtime_matches_eager(model, exported, shape):
    predictor = build_predictor(model, "onnx", onnx_path=str(exported), threads=1)
    batch = random_batch(*shape)
    expected = build_predictor(model, "eager")(batch)
    got = predictor(batch)
    assert predictor.backend == "onnx" and got.shape == expected.shape
    assert np.abs(got - expected).max() <= error_bound("onnx")


def test_onnx_file_of_other_weights_is_refused(exported):
    with pytest.raises(ValueError, match="not exported from this model"):
        build_predictor(perturbed_model(seed=1), "onnx", onnx_path=str(exported))


def test_onnx_predictor_validates_batches(model, exported):
    predictor = build_predictor(model, "onnx", onnx_path=str(exported))
    with pytest.raises(ValueError, match="multiples of 32"):
        predictor(random_batch(1, 40, 64))


def test_export_of_a_missing_model_fails_cleanly(tmp_path, capsys):
    assert main(["export", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x.onnx")]) != 0
    assert "cannot load model" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_a_non_onnx_file_is_refused(model, tmp_path):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError):
        build_predictor(model, "onnx", onnx_path=str(bogus))


@pytest.mark.parametrize("fmt, option, flag", [("onnx", ["--fp32-modules", "encoder"], "--fp32-modules"),
                                               ("onnx", ["--calibration-frames", "10"], "--calibration-frames"),
                                               ("int8", ["--static"], "--static"),
                                               ("int8", ["--image-size", "64"], "--image-size")])
def test_options_of_the_other_format_are_refused_not_ignored(tmp_path, capsys, fmt, option, flag):
    args = ["export", "--model", str(tmp_path / "nope"), "--format", fmt, "--out", str(tmp_path / "x"), *option]
    assert main(args) == 2
    err = capsys.readouterr().err
    other = "int8" if fmt == "onnx" else "onnx"
    assert f"error: {flag} only applies to --format {other}" in err
    assert not (tmp_path / "x").exists()
