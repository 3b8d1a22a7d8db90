"""The INT8 path (OpenVINO + NNCF) and the float32 OpenVINO backend, on a tiny model.

One ONNX export and one quantisation per module (the dynamo export dominates the time).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from jaffnet.inference import build_predictor, error_bound
from jaffnet.inference.bench import synthetic_frames
from jaffnet.inference.int8_files import MANIFEST_NAME, MODEL_FILES, float32_layers, read_int8_manifest
from jaffnet.inference.quantization import AccuracyControl, quantize_int8, runtime_available
from jaffnet.inference.onnx_export import weights_fingerprint
from tests.jaffnet.inference.conftest import ONNX_IMAGE_SIZE, TOLERANCE, perturbed_model, random_batch

pytestmark = [pytest.mark.slow,  # real INT8 quantisations (tens of seconds)
              pytest.mark.skipif(not runtime_available(),
                                reason="OpenVINO/NNCF cannot be imported (pip install 'jaffnet[openvino]')")]
SIZE = ONNX_IMAGE_SIZE
METADATA = {"input_contract": {"mode": "resize", "image_size": SIZE}, "source": "test"}


@pytest.fixture(scope="module")
def onnx_file(exported):
    return exported  # the model's weights exported at SIZE, shared with test_onnx


@pytest.fixture(scope="module")
def file_set(model, onnx_file, tmp_path_factory):
    frames = synthetic_frames(8, SIZE)
    out = tmp_path_factory.mktemp("int8") / "set"
    return quantize_int8(model, (frames[:5], frames[5:]), out, metadata=METADATA, image_size=SIZE,
                         onnx_path=onnx_file)


@pytest.fixture(scope="module")
def int8(model, file_set):
    return build_predictor(model, "int8", threads=2, quantized_path=str(file_set))


@pytest.fixture(scope="module")
def eager(model):
    return build_predictor(model, "eager")


@pytest.fixture
def stand_in_quantiser(file_set, monkeypatch):
    """``quantize_int8`` as the int8 backend calls it (quantising on the fly, as the bench does)
    replaced by a copy of the module's file set, stamped with the fingerprint of the weights it
    was asked to quantise so the backend loads it; returns the calls' arguments. For tests of what
    reaches the quantiser: the real quantisation is the ``file_set`` fixture's (the same function)."""
    import jaffnet.inference.int8_backend as int8_backend

    calls = []

    def quantize(model_, batches, out_dir, *, metadata=None, image_size=256, fp32_modules=None):
        calls.append({"frames": sum(len(b) for b in batches), "image_size": image_size, "fp32_modules": fp32_modules})
        for path in file_set.parent.iterdir():
            shutil.copy(path, out_dir)
        manifest = read_int8_manifest(out_dir) | {"weights_sha256": weights_fingerprint(model_)}
        (Path(out_dir) / MANIFEST_NAME).write_text(json.dumps(manifest))
        return Path(out_dir) / MANIFEST_NAME

    monkeypatch.setattr(int8_backend, "quantize_int8", quantize)
    return calls


@pytest.mark.parametrize("shape", [(4, SIZE, SIZE), (2, 96, 64)])
def test_int8_probabilities_stay_close_to_fp32(int8, eager, shape):
    batch = synthetic_frames(shape[0], shape[1], seed=5) if shape[1] == shape[2] else random_batch(*shape)
    expected = eager(batch)
    assert expected.std() > 0.02  # a spread-out map, so the comparison means something
    got = int8(batch)
    assert got.shape == shape and got.dtype == np.float32
    assert ((got >= 0) & (got <= 1)).all()
    assert np.abs(got - expected).mean() < 0.01  # ~2e-3 measured
    assert np.abs(got - expected).max() < error_bound("int8")
    assert int8.backend == "int8" and int8.device == "cpu"


def test_the_file_set_round_trips(model, file_set, int8):
    folder = file_set.parent
    assert file_set.name == MANIFEST_NAME
    assert sorted(p.name for p in folder.iterdir()) == sorted([MANIFEST_NAME, *MODEL_FILES])
    manifest = read_int8_manifest(folder)
    assert manifest == json.loads(file_set.read_text()) == int8.manifest
    assert manifest["weights_sha256"] == weights_fingerprint(model)
    assert manifest["config"] == model.config
    assert manifest["metadata"] == METADATA
    assert manifest["image_size"] == SIZE
    assert manifest["calibration"]["frames"] == 8 and "min-max" in manifest["calibration"]["method"]
    assert manifest["float32"]["modules"] == ["encoder.stem"] and "Interpolate" in manifest["float32"]["op_types"]
    batch = random_batch(2, SIZE, SIZE)
    # One thread each: on an AMD EPYC without AVX-512 OpenVINO's multi-threaded int8 kernels gave the
    # same batch maps one rounding step apart (0.005-0.007) from call to call; one thread repeats exactly.
    expected = build_predictor(model, "int8", threads=1, quantized_path=str(file_set))(batch)
    for path in (folder, file_set, folder / "model.xml"):  # any of the three names the set
        np.testing.assert_array_equal(build_predictor(model, "int8", threads=1, quantized_path=str(path))(batch),
                                      expected)


def test_other_weights_are_refused(file_set):
    with pytest.raises(ValueError, match="not quantised from this model's weights"):
        build_predictor(perturbed_model(seed=1), "int8", quantized_path=str(file_set))


def test_changed_files_and_non_sets_are_refused(model, file_set, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(file_set.parent, copy)
    with open(copy / "model.bin", "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="changed since it was quantised"):
        build_predictor(model, "int8", quantized_path=str(copy))
    with pytest.raises(ValueError, match="not an INT8 file set"):
        build_predictor(model, "int8", quantized_path=str(tmp_path / "nothing"))
    (copy / MANIFEST_NAME).write_text("{}")
    with pytest.raises(ValueError, match="manifest"):
        build_predictor(model, "int8", quantized_path=str(copy))


def test_int8_needs_a_file_set_or_calibration(model):
    with pytest.raises(ValueError, match="needs quantized_path"):
        build_predictor(model, "int8")
    with pytest.raises(ValueError, match="not both"):
        build_predictor(model, "int8", quantized_path="x", calibration_batches=[synthetic_frames(1, SIZE)])
    with pytest.raises(ValueError, match="CPU only"):
        build_predictor(model, "int8", device="cuda", quantized_path="x")


@pytest.mark.parametrize("batches,error", [
    ([], "no calibration frames"),
    ([np.zeros((2, 3, SIZE, SIZE), np.uint8)], "normalise"),
    ([np.zeros((2, 1, 2, SIZE, SIZE), np.float32)], "shape"),
    ([np.full((1, 3, SIZE, SIZE), np.nan, np.float32)], "NaN"),
])
def test_bad_calibration_batches_are_refused(model, tmp_path, batches, error):
    with pytest.raises(ValueError, match=error):
        quantize_int8(model, batches, tmp_path, image_size=SIZE)
    assert not any(tmp_path.iterdir())


def test_only_convolutions_outside_the_float32_modules_are_quantised(model, file_set):
    from jaffnet.inference.openvino_runtime import shared_core

    quantised = shared_core().read_model(str(file_set.parent / "model.xml"))
    fed = {target.get_node().get_type_name()
           for op in quantised.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
           for target in op.output(0).get_target_inputs()}
    assert fed == {"Convolution"}  # ShapeOf etc. would show here too: none
    stem = next(op for op in quantised.get_ordered_ops() if op.get_type_name() == "Convolution")
    assert stem.input_value(0).get_node().get_type_name() == "Parameter"  # the stem reads the image unquantised


def test_accuracy_control_restores_float32_convolutions_until_held_out_masks_agree(model, eager, onnx_file, file_set,
                                                                                   tmp_path):
    from jaffnet.metrics import mask_iou

    held_out = synthetic_frames(4, SIZE, seed=7)
    threshold = float(np.median(eager(held_out)))  # half of every map near the threshold: masks are fragile

    def held_out_iou(predict):
        return np.mean([mask_iou(a >= threshold, b >= threshold) for a, b in zip(predict(held_out), eager(held_out))])

    # Encoder and decoder float32: accuracy control ranks only the bridge's and the heads' convolutions. The
    # test's time is then bounded: quantisation on 2 threads is not bit-reproducible, these fragile masks turn
    # that into plain IoUs from 0.72 to 0.97 between runs, and with the ~60 convolutions outside the encoder
    # one run in a few restored for 7 minutes instead of 30 s.
    kept = ("encoder", "decoder")
    frames = synthetic_frames(8, SIZE)
    plain_set = quantize_int8(model, (frames[:5], frames[5:]), tmp_path / "plain", image_size=SIZE,
                              onnx_path=onnx_file, fp32_modules=kept)
    plain = held_out_iou(build_predictor(model, "int8", threads=2, quantized_path=str(plain_set)))
    target = min(1.0, plain + (1 - plain) / 2)  # half the way from the plain scheme's IoU to perfect agreement
    controlled = quantize_int8(model, (frames[:5], frames[5:]), tmp_path, image_size=SIZE, onnx_path=onnx_file,
                               fp32_modules=kept,
                               accuracy_control=AccuracyControl([held_out], pixel_threshold=threshold,
                                                                min_mask_iou=target))
    manifest = read_int8_manifest(controlled)
    float32 = manifest["float32"]
    assert float32["restored"]  # convolutions given back float32, by graph node...
    convolutions = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Conv2d)}
    assert float32["restored_modules"] and set(float32["restored_modules"]) <= convolutions  # ...and by module
    assert float32["accuracy_control"] == {"held_out_frames": 4, "pixel_threshold": threshold,
                                           "min_mask_iou": target}
    assert "accuracy control" in manifest["calibration"]["method"]
    assert held_out_iou(build_predictor(model, "int8", threads=2, quantized_path=str(controlled))) >= target
    assert read_int8_manifest(file_set)["float32"]["restored"] == []  # without accuracy control: none

    # The module paths carry the scheme to another quantisation (jaffnet bench model --int8-scheme).
    assert float32_layers(controlled) == [*kept, *float32["restored_modules"]]
    again = quantize_int8(model, (frames[:5], frames[5:]), tmp_path / "again", image_size=SIZE,
                          onnx_path=onnx_file, fp32_modules=float32_layers(controlled))
    assert _float_convolution_count(again) == _float_convolution_count(controlled)


def _float_convolution_count(manifest_path) -> int:
    """Convolutions of a file set that read a float32 input (no FakeQuantize before them)."""
    from jaffnet.inference.openvino_runtime import shared_core

    quantised = shared_core().read_model(str(Path(manifest_path).parent / "model.xml"))
    return sum(op.input_value(0).get_node().get_type_name() != "FakeQuantize"
               for op in quantised.get_ordered_ops() if op.get_type_name() == "Convolution")


def test_a_convolution_fused_with_its_batch_norm_can_be_kept_float32_by_its_own_name(model, onnx_file, file_set,
                                                                                     tmp_path):
    # The exporter folds encoder.layer1.0.bn1 into the convolution before it; the ONNX node records only the
    # batch norm's name, yet users name the convolution.
    kept = quantize_int8(model, [synthetic_frames(2, SIZE)], tmp_path, image_size=SIZE, onnx_path=onnx_file,
                         fp32_modules=("encoder.stem", "encoder.layer1.0.conv1"))
    assert _float_convolution_count(kept) == _float_convolution_count(file_set) + 1
    assert float32_layers(kept) == ["encoder.stem", "encoder.layer1.0.conv1"]


def test_the_shipped_full_width_scheme_names_modules_of_the_full_size_model():
    # The INT8 figures on another CPU (docs/benchmarks/int8.md) come from this manifest (`--int8-scheme docs/int8-scheme-full-width`):
    # it must stay readable and name only modules the default model has.
    from jaffnet.inference.quantization import check_fp32_modules
    from jaffnet.model import JAFFNet

    scheme = Path(__file__).resolve().parents[3] / "docs" / "int8-scheme-full-width"
    layers = float32_layers(scheme)
    assert layers[0] == "encoder.stem" and len(layers) == 13  # the stem + the 12 convolutions restored
    assert check_fp32_modules(JAFFNet(), layers) == tuple(layers)


def test_bench_model_times_int8_with_the_float32_layers_of_an_export(file_set, stand_in_quantiser, tmp_path, capsys):
    from cli.main import main

    manifest = json.loads(Path(file_set).read_text())
    manifest["float32"].update(restored=["node_Conv_868/WithoutBiases"], restored_modules=["encoder.layer1.0.conv1"])
    scheme = tmp_path / "export" / MANIFEST_NAME
    scheme.parent.mkdir()
    scheme.write_text(json.dumps(manifest))
    out = tmp_path / "bench.json"
    assert main(["bench", "model", "--width", "0.125", "--image-size", str(SIZE), "--batch-sizes", "1",
                 "--backends", "eager", "--device", "cpu", "--iters", "1", "--train-batch-size", "0",
                 "--int8-scheme", str(scheme.parent), "--json", str(out)]) == 0
    assert "float32 layers of" in capsys.readouterr().out.replace("\n", " ") and \
        {r["backend"] for r in json.loads(out.read_text())["inference"]} == {"eager", "int8"}
    assert [list(call["fp32_modules"]) for call in stand_in_quantiser] == [["encoder.stem", "encoder.layer1.0.conv1"]]

    del manifest["float32"]["restored_modules"]  # an export from before module paths were recorded
    scheme.write_text(json.dumps(manifest))
    assert main(["bench", "model", "--int8-scheme", str(scheme)]) == 2
    assert "export the model again" in capsys.readouterr().err
    assert main(["bench", "model", "--int8-scheme", str(tmp_path / "nothing")]) == 2
    assert "not an INT8 file set" in capsys.readouterr().err


@pytest.mark.parametrize("threshold,iou", [(1.5, 0.9), (0.5, 0.0), (0.5, 1.2)])
def test_accuracy_control_refuses_impossible_targets(threshold, iou):
    with pytest.raises(ValueError, match="must be in"):
        AccuracyControl([synthetic_frames(1, SIZE)], pixel_threshold=threshold, min_mask_iou=iou)


@pytest.mark.parametrize("modules,error", [(["encoder.nothing"], "not modules of this model"),
                                          ("decoderr", "not modules of this model")])
def test_unknown_fp32_modules_are_refused(model, tmp_path, modules, error):
    with pytest.raises(ValueError, match=error):
        quantize_int8(model, [synthetic_frames(1, SIZE)], tmp_path, image_size=SIZE, fp32_modules=modules)


def test_quantising_on_the_fly_and_the_bench_calibrating_on_synthetic_frames(model, file_set, stand_in_quantiser):
    """The wiring of ``build_predictor(model, "int8", calibration_batches=...)`` and of the bench,
    which calibrates random-weight models on synthetic frames; the real quantisation is the
    fixture's (the same function), so it is not repeated here."""
    from jaffnet.inference.bench import build_predictors

    predictors, skipped = build_predictors(model, ["int8"], threads=1, image_size=SIZE, calibration_frames=3)
    assert skipped == {} and stand_in_quantiser == [{"frames": 3, "image_size": SIZE,
                                                     "fp32_modules": ("encoder.stem",)}]
    assert predictors["int8"].note.endswith(", synthetic 64x64")
    assert predictors["int8"](random_batch(1, SIZE, SIZE)).shape == (1, SIZE, SIZE)
    build_predictor(model, "int8", calibration_batches=[synthetic_frames(2, SIZE)], image_size=SIZE,
                    fp32_modules=["encoder"])
    assert stand_in_quantiser[-1]["fp32_modules"] == ["encoder"]
    with pytest.raises(ValueError, match="not both"):
        build_predictor(model, "int8", quantized_path=str(file_set), fp32_modules=["encoder"])


def test_synthetic_frames_are_deterministic_and_normalised():
    a, b = synthetic_frames(3, 32, seed=1), synthetic_frames(3, 32, seed=1)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 3, 32, 32) and a.dtype == np.float32
    assert -2.2 < a.min() and a.max() < 2.7 and a.std() > 0.1  # within ImageNet-normalised uint8 range
    assert synthetic_frames(2, 32, channels=1).shape == (2, 1, 32, 32)


def test_openvino_fp32_matches_eager(model, eager, onnx_file):
    predictor = build_predictor(model, "openvino", threads=2, onnx_path=str(onnx_file))
    assert predictor.backend == "openvino"
    for shape in [(2, SIZE, SIZE), (1, 96, 64)]:
        batch = random_batch(*shape)
        got = predictor(batch)
        assert got.shape == shape and got.dtype == np.float32
        assert np.abs(got - eager(batch)).max() <= error_bound("openvino") == TOLERANCE
    with pytest.raises(ValueError, match="not exported from this model's weights"):
        build_predictor(perturbed_model(seed=1), "openvino", onnx_path=str(onnx_file))
