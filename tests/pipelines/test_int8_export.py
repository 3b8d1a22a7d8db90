"""``jaffnet export --format int8`` end to end on a tiny registered model: calibration on its
own training split, the gate on its test split, the file set + report in --out and in its run."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

for _runtime in ("openvino", "nncf", "onnxscript"):  # quantize_int8: ONNX export -> OpenVINO + NNCF
    pytest.importorskip(_runtime, reason="the int8 backend needs the openvino extra (openvino, nncf) and the "
                                         "ONNX exporter (onnxscript)")

SIZE = 64
MODEL_NAME = "int8-test"


def register_tiny_model(datasets, name: str = MODEL_NAME, experiment: str = "int8-test") -> str:
    """A random width-0.25 model at 64 px registered as training publishes one trained on
    ``datasets`` (one, or a mix): their params as training logs them (``dataset_params``) and
    the (mix's) manifest hash as ``dataset_manifest`` (version and run tag, metadata), a rule
    calibrated on its own validation maps. Returns ``models:/NAME@champion``."""
    import mlflow
    import torch

    from jaffnet.contract import InputContract
    from jaffnet.frames import predict_frames
    from jaffnet.inference import build_predictor
    from jaffnet.model import JAFFNet
    from pipelines import registry
    from pipelines.data.dataset import iter_samples, mix_manifest_hash
    from pipelines.evaluation.scoring import score_predictions
    from pipelines.training.tracking import dataset_params

    dataset_dirs = [str(location) for location in datasets]
    torch.manual_seed(0)
    model = JAFFNet(width=0.25).eval()
    contract = InputContract(image_size=SIZE)
    samples = list(iter_samples(dataset_dirs, "val"))
    maps = {str(s.id): p for s, p in predict_frames(samples, contract, build_predictor(model, "eager"))}
    rule = score_predictions(maps, samples, per_class=False).rule
    manifest = mix_manifest_hash(dataset_dirs)
    metadata = {"image_size": SIZE, "threshold": rule.pixel_threshold, "input_contract": contract.to_dict(),
                "decision_rule": rule.to_dict(), "dataset_manifest": manifest}
    mlflow.set_experiment(experiment)
    with mlflow.start_run():
        mlflow.log_params(dataset_params(dataset_dirs))
        mlflow.set_tag(registry.MANIFEST_TAG, manifest)
        info = registry.log_model(model, metadata)
    registry.register(info.model_uri, name, tags={registry.MANIFEST_TAG: manifest},
                      aliases=(registry.CANDIDATE_ALIAS, registry.CHAMPION_ALIAS))
    return f"models:/{name}@{registry.CHAMPION_ALIAS}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("int8-export")


@pytest.fixture(scope="module", autouse=True)
def export_and_quantise_each_once(workdir):
    """The real ONNX export and ``quantize_int8``, each run once per distinct input in this module.
    Every export exports the model to ONNX and the tests walk the same float32 rungs of the same
    model (seconds each, accuracy control more), so a repeat gets a copy of the files the first call
    wrote. A key holds everything those files depend on: the weights and every argument, calibration
    frames and accuracy control's held-out frames by content (not ``onnx_path``: an export of the
    same weights, which the quantiser checks)."""
    import hashlib

    import jaffnet.inference
    import jaffnet.inference.quantization as quantization
    from jaffnet.inference.int8_files import MANIFEST_NAME
    from jaffnet.inference.onnx_export import weights_fingerprint

    def frames_digest(batches) -> str:
        digest = hashlib.sha256()
        for batch in batches:
            digest.update(repr(batch.shape).encode() + np.ascontiguousarray(batch).tobytes())
        return digest.hexdigest()

    def once(write, *key_parts) -> Path:
        """The folder ``write(folder)`` filled the first time these key parts were seen."""
        folder = workdir / "memo" / hashlib.sha256(json.dumps([*key_parts], sort_keys=True).encode()).hexdigest()[:16]
        if not folder.is_dir():
            partial = folder.with_name(f"{folder.name}-partial")  # a failed call leaves no entry behind
            shutil.rmtree(partial, ignore_errors=True)
            write(partial)
            partial.rename(folder)
        return folder

    real_export, real_quantize = jaffnet.inference.export_onnx, quantization.quantize_int8

    def export_once(model, path, **options):
        folder = once(lambda into: real_export(model, into / "model.onnx", **options),
                      "onnx", weights_fingerprint(model), options)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(folder / "model.onnx", path))

    def quantize_once(model, calibration_batches, out_dir, *, accuracy_control=None, onnx_path=None, **options):
        calibration_batches = list(calibration_batches)  # may be a generator: read for the key and the quantiser
        control = None if accuracy_control is None else (
            frames_digest(accuracy_control.inputs), accuracy_control.pixel_threshold, accuracy_control.min_mask_iou)
        folder = once(lambda into: real_quantize(model, calibration_batches, into, accuracy_control=accuracy_control,
                                                 onnx_path=onnx_path, **options),
                      "int8", weights_fingerprint(model), frames_digest(calibration_batches), control, options)
        shutil.copytree(folder, out_dir, dirs_exist_ok=True)
        return Path(out_dir) / MANIFEST_NAME

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jaffnet.inference, "export_onnx", export_once)
        patch.setattr(quantization, "quantize_int8", quantize_once)
        yield


@pytest.fixture(scope="module")
def dataset(workdir, ray_session):
    from tests.datasets import make_tiny_dataset

    return make_tiny_dataset(workdir / "data", count=24, size=SIZE)


@pytest.fixture(scope="module")
def registered(workdir, dataset):
    """(tracking URI, model URI) in a registry of this module's own; MLflow's settings are restored after."""
    from tests.serving.conftest import temporary_tracking

    with temporary_tracking(workdir) as uri:
        import mlflow

        mlflow.create_experiment("int8-test", artifact_location=str(workdir / "mlruns"))
        yield uri, register_tiny_model([dataset])


def _export(registered, out, *extra):
    from cli.main import main

    uri, model = registered
    return main(["export", "--model", model, "--format", "int8", "--out", str(out), "--calibration-frames", "8",
                 "--tracking-uri", uri, *extra])


def test_export_writes_the_file_set_and_gate_report_and_logs_them_to_the_run(registered, workdir, capsys):
    from mlflow import MlflowClient

    from jaffnet.inference import build_predictor
    from pipelines.registry import download_int8, load_model

    out = workdir / "int8"
    assert _export(registered, out) == 0
    printed = capsys.readouterr().out
    assert "GATE PASSED" in printed and "verdict agreement" in printed
    report = json.loads((out / "gate_report.json").read_text())
    assert report["passed"] and report["split"] == "test" and report["count"] > 0
    extra = report["extra"]
    # The fastest rung (the stem in float32) is tried first on the validation split and kept when it
    # passes. Whether it passes is the CPU's business: this random model's maps sit near its thresholds,
    # and on an AMD EPYC without AVX-512 its int8 kernels flipped verdicts the Xeon's and Zen 4's did not.
    # The ladder past a failed stem is tested deterministically below.
    selection = extra["fp32_selection"]
    assert selection[0]["accuracy_control"] is False and selection[0]["split"] == "val"
    if selection[0]["passed"]:
        assert extra["fp32_modules"] == ["encoder.stem"] and len(selection) == 1
        assert "float32 encoder.stem: gate on val passed" in printed
    else:
        assert "float32 encoder.stem: gate on val failed" in printed and len(selection) > 1
        assert extra["accuracy_control"] or extra["fp32_modules"] == ["encoder"]  # a later rung, passed on test
    assert extra["calibration_split"] == "train" and 0 < extra["calibration_frames"] <= 8
    assert extra["dataset_source"].startswith("run ") and extra["version"] == "1"
    file_set = out / extra["file_set"]
    assert file_set.exists()
    assert {c["name"] for c in report["checks"]} >= {"|delta| mae", "verdict agreement", "mean mask IoU"}

    loaded = load_model(registered[1])
    client = MlflowClient()
    logged = {a.path for a in client.list_artifacts(loaded.run_id, "int8")}
    assert {"int8/gate_report.json", f"int8/{extra['file_set'].split('/')[0]}"} <= logged
    assert client.get_model_version(MODEL_NAME, "1").tags["int8_gate"] == "passed"
    # What serving's backend: int8 loads: the logged file set, checked against the weights.
    downloaded = download_int8(loaded, workdir / "download")
    assert downloaded.name == file_set.name
    predictor = build_predictor(loaded.model, "int8", quantized_path=str(downloaded))
    assert predictor(np.zeros((1, 3, SIZE, SIZE), np.float32)).shape == (1, SIZE, SIZE)

    # A second export into the same folder may replace this one (it holds our report).
    from pipelines.int8_export import _check_destination

    _check_destination(out)


def test_a_failed_gate_exits_1_with_the_report_and_no_usable_export(registered, workdir, monkeypatch, capsys):
    import jaffnet.inference
    import jaffnet.inference.quantization as quantization
    from mlflow import MlflowClient

    from jaffnet.inference.int8_files import FORMAT, FORMAT_VERSION
    from pipelines.registry import load_model

    real_build = jaffnet.inference.build_predictor

    def fake_quantize(model, calibration_batches, out_dir, **kwargs):
        assert all(batch.shape[1:] == (3, SIZE, SIZE) for batch in calibration_batches)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                    "float32": {"modules": list(kwargs["fp32_modules"]), "restored": []}}
        out_dir.mkdir(parents=True, exist_ok=True)  # as quantize_int8 does
        (out_dir / "jaffnet_int8.json").write_text(json.dumps(manifest))
        return out_dir / "jaffnet_int8.json"

    def wrong_int8(model, backend="eager", **options):
        if backend != "int8":
            return real_build(model, backend, **options)
        fp32, rng = real_build(model, "eager"), np.random.default_rng(0)  # a deliberately wrong candidate
        return lambda batch: np.clip(fp32(batch) + rng.normal(0, 0.3, (len(batch), SIZE, SIZE)),
                                     0, 1).astype(np.float32)

    monkeypatch.setattr(quantization, "quantize_int8", fake_quantize)
    monkeypatch.setattr(jaffnet.inference, "build_predictor", wrong_int8)
    out = workdir / "int8-rejected"
    assert _export(registered, out) == 1
    captured = capsys.readouterr()
    assert "GATE FAILED" in captured.out and "failed its accuracy gate" in captured.err
    assert [p.name for p in out.iterdir()] == ["gate_report.json"]  # no quantised files left behind
    report = json.loads((out / "gate_report.json").read_text())
    assert not report["passed"] and report["extra"]["file_set"] is None
    # Every rung of the float32 ladder was tried; the first two failed on the validation split.
    assert report["extra"]["fp32_modules"] == ["encoder"] and not report["extra"]["accuracy_control"]
    assert [(step["fp32_modules"], step["accuracy_control"], step["split"], step["passed"])
            for step in report["extra"]["fp32_selection"]] \
        == [(["encoder.stem"], False, "val", False), (["encoder.stem"], True, "val", False)]
    assert any(not c["passed"] for c in report["checks"])

    run_id = load_model(registered[1]).run_id
    client = MlflowClient()
    assert {a.path for a in client.list_artifacts(run_id, "int8_rejected")} == {"int8_rejected/gate_report.json"}
    assert client.get_model_version(MODEL_NAME, "1").tags["int8_gate"] == "failed"


def test_data_must_be_the_models_own_training_data(registered, dataset, workdir, capsys):
    from pipelines.int8_export import model_data
    from pipelines.registry import load_model

    copy = workdir / "data-copy"
    shutil.copytree(dataset, copy)
    loaded = load_model(registered[1])
    assert model_data(loaded, copy).dataset_dirs == (str(copy),)  # a moved copy is the same data

    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["content_hash"] = "0" * len(manifest["content_hash"])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert _export(registered, workdir / "never", "--data", str(copy)) == 2
    assert "refusing to calibrate or gate on other data" in capsys.readouterr().err
    assert not (workdir / "never").exists()


def test_a_model_trained_on_a_mix_is_calibrated_and_gated_on_the_union_of_its_datasets(registered, dataset,
                                                                                       workdir, ray_session, capsys):
    from pipelines.data.dataset import read_manifest
    from pipelines.int8_export import ExportRefused, calibration_samples, model_data
    from pipelines.registry import load_model
    from tests.datasets import make_tiny_dataset

    line = make_tiny_dataset(workdir / "line", count=12, size=SIZE, seed=1)
    mix = [str(dataset), str(line)]
    uri, _ = registered
    model = register_tiny_model(mix, name="int8-mix")
    # One scheme given: the float32 ladder, the same whatever the data, has its own tests.
    assert _export((uri, model), workdir / "int8-mix", "--fp32-modules", "encoder.stem") == 0
    report = json.loads((workdir / "int8-mix" / "gate_report.json").read_text())
    assert report["passed"] and report["extra"]["dataset_dirs"] == mix
    assert report["extra"]["dataset_source"].endswith("param data.0.dir, data.1.dir")
    assert report["count"] == sum(read_manifest(location)["totals"]["test"] for location in mix)
    assert {sample.id.split(":")[0] for sample in calibration_samples(mix, 8)} == {"0", "1"}  # spread over both

    loaded = load_model(model)
    moved = workdir / "line-copy"
    shutil.copytree(line, moved)
    assert model_data(loaded, [moved, dataset]).dataset_dirs == (str(moved), str(dataset))  # any order, moved
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["content_hash"] = "0" * len(manifest["content_hash"])  # now other data
    (moved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportRefused, match=rf"a mix of 2 datasets; not given: {re.escape(str(line))} .*; not in "
                                            rf"the mix: {re.escape(str(moved))}: refusing to calibrate"):
        model_data(loaded, [dataset, moved])
    capsys.readouterr()
    assert _export((uri, model), workdir / "never-mix", "--data", str(dataset)) == 2
    assert "not given: " in capsys.readouterr().err and not (workdir / "never-mix").exists()
    # The command takes every dataset of the mix, in any order (--data repeated).
    assert _export((uri, model), workdir / "int8-mix-given", "--data", str(line), "--data", str(dataset),
                   "--fp32-modules", "encoder.stem") == 0
    assert json.loads((workdir / "int8-mix-given" / "gate_report.json").read_text())["extra"]["dataset_source"] \
        == "--data"


def test_a_foreign_non_empty_folder_is_refused(registered, workdir, capsys):
    out = workdir / "occupied"
    out.mkdir()
    (out / "keep.txt").write_text("not ours")
    assert _export(registered, out) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "not ours"


def test_fp32_modules_reach_the_quantiser_and_unknown_ones_are_refused(registered, workdir, capsys):
    import json

    assert _export(registered, workdir / "int8-encoder", "--fp32-modules", "encoder") == 0
    manifest = json.loads((workdir / "int8-encoder" / "jaffnet_int8.json").read_text())
    assert manifest["float32"]["modules"] == ["encoder"]
    capsys.readouterr()
    assert _export(registered, workdir / "int8-nowhere", "--fp32-modules", "encoder.nowhere") == 2
    assert "encoder.nowhere" in capsys.readouterr().err


def _wrong_when(condition):
    """``build_predictor`` whose int8 predictors are deliberately wrong when ``condition(manifest)``
    and exactly the float model otherwise: the quantisation is real, but which rungs pass the gate is
    this test's choice, not the CPU's (int8 kernels round differently on each CPU kind)."""
    import jaffnet.inference
    from jaffnet.inference.int8_files import read_int8_manifest

    real_build = jaffnet.inference.build_predictor

    def build(model, backend="eager", **options):
        if backend != "int8":
            return real_build(model, backend, **options)
        exact = real_build(model, "eager")
        if not condition(read_int8_manifest(options["quantized_path"])["float32"]):
            return exact  # a rung that must pass
        return lambda batch: np.clip(exact(batch) + 0.3, 0, 1).astype(np.float32)  # a rung that must be rejected

    return build


@pytest.mark.parametrize("faster", ["accuracy control", "encoder"])
def test_when_the_stem_alone_fails_on_val_the_faster_of_accuracy_control_and_the_encoder_is_kept(
        registered, workdir, monkeypatch, capsys, faster):
    import jaffnet.inference
    import pipelines.int8_export as int8_export

    plain_stem = _wrong_when(lambda f32: f32["modules"] == ["encoder.stem"] and f32["accuracy_control"] is None)
    monkeypatch.setattr(jaffnet.inference, "build_predictor", plain_stem)
    timed = []

    def seconds_per_input(predictors, batches):  # wall-clock timing is the machine's business, not this test's
        timed.append(len(list(batches)))
        return [0.010, 0.020] if faster == "accuracy control" else [0.020, 0.010]

    monkeypatch.setattr(int8_export, "_seconds_per_input", seconds_per_input)
    out = workdir / f"int8-{faster.replace(' ', '-')}"
    assert _export(registered, out) == 0
    assert timed and timed[0] > 0  # timed on the validation inputs
    printed = capsys.readouterr().out
    assert "float32 encoder.stem: gate on val failed" in printed
    assert "float32 encoder.stem + accuracy control (" in printed and "): gate on val passed" in printed
    report = json.loads((out / "gate_report.json").read_text())
    extra = report["extra"]
    assert [(step["accuracy_control"], step["passed"], step["split"], step.get("ms_per_input"))
            for step in extra["fp32_selection"]] == [
        (False, False, "val", None), (True, True, "val", 10.0 if faster == "accuracy control" else 20.0),
        (False, True, "val", 20.0 if faster == "accuracy control" else 10.0)]
    assert report["passed"] and sorted(path.name for path in out.iterdir()) == [  # the kept rung's files only
        "gate_report.json", "jaffnet_int8.json", "model.bin", "model.xml"]
    manifest = json.loads((out / "jaffnet_int8.json").read_text())
    if faster == "accuracy control":
        assert "float32 modules: encoder.stem + accuracy control (" in printed
        assert extra["accuracy_control"] and extra["fp32_modules"] == ["encoder.stem"]
        assert manifest["float32"]["accuracy_control"]["min_mask_iou"] == 0.975  # aimed above the gate's 0.95
        assert manifest["float32"]["restored_modules"] == extra["fp32_restored"]  # module paths, in the report too
        assert all(path.startswith(("encoder.", "bridge.", "decoder.", "heads.")) for path in extra["fp32_restored"])
    else:
        assert "float32 modules: encoder\n" in printed
        assert not extra["accuracy_control"] and extra["fp32_modules"] == ["encoder"] and not extra["fp32_restored"]
        assert manifest["float32"]["modules"] == ["encoder"] and manifest["float32"]["accuracy_control"] is None


def test_without_fp32_modules_the_encoder_stays_float32_when_both_stem_rungs_fail_on_val(registered, workdir,
                                                                                           monkeypatch, capsys):
    import jaffnet.inference
    import jaffnet.inference.quantization as quantization

    stem_rungs = _wrong_when(lambda f32: f32["modules"] == ["encoder.stem"])
    monkeypatch.setattr(jaffnet.inference, "build_predictor", stem_rungs)
    real_quantize = quantization.quantize_int8
    # Both stem rungs are made to fail whatever they restore: skip accuracy control's minutes-long search.
    monkeypatch.setattr(quantization, "quantize_int8",
                        lambda *args, accuracy_control=None, **kwargs: real_quantize(*args, **kwargs))
    out = workdir / "int8-ladder"
    assert _export(registered, out) == 0
    printed = capsys.readouterr().out
    assert "float32 encoder.stem: gate on val failed" in printed and "float32 modules: encoder\n" in printed
    report = json.loads((out / "gate_report.json").read_text())
    assert report["passed"] and report["extra"]["fp32_modules"] == ["encoder"]
    assert not report["extra"]["accuracy_control"] and report["extra"]["fp32_restored"] == []
    assert json.loads((out / "jaffnet_int8.json").read_text())["float32"]["modules"] == ["encoder"]
    assert [(step["fp32_modules"], step["accuracy_control"], step["passed"])
            for step in report["extra"]["fp32_selection"]] \
        == [(["encoder.stem"], False, False), (["encoder.stem"], True, False)]
