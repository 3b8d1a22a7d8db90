"""``jaffnet export --format int8``: calibrate on the model's own training frames, gate, publish.

1. **Which data.** A registered version records the data it was trained on: the run param
   ``dataset_dir`` (one dataset) or ``data.<i>.dir`` (each dataset of a mix), and the
   manifest hash (version tag ``dataset_manifest``, also in the run's tags and the model's
   metadata; for a mix, one hash of all its datasets). Calibration and the gate read those
   datasets, a mix's splits as training saw them (the union, ids prefixed per dataset);
   ``--data`` points elsewhere (moved copies, every dataset of a mix) only if they hash to
   the recorded manifest, so a model is never calibrated or judged on someone else's frames.
2. **Calibration.** Up to N frames of the TRAIN split, spread evenly over it, turned into
   model inputs through the model's input contract exactly as serving does
   (``jaffnet.frames.plan_frame`` + ``model_inputs``): a tiled model calibrates on tiles.
3. **Which layers stay float32.** ``--fp32-modules`` as given; without it the rungs of
   ``FP32_LADDER``, each judged by the same gate on the VALIDATION split: only the encoder
   stem float32 (fastest), kept if it passes; then the same with accuracy control (the
   convolutions that cost the validation masks the most restored to float32 until they agree
   with fp32's); then the whole encoder float32. When accuracy control passes and the whole
   encoder does too, the faster of the two at the model's input size is kept (timed on
   validation inputs, one at a time); when nothing passes, the whole encoder goes to the gate.
4. **The gate** (``pipelines.quantization_gate``) on the TEST split, int8 against eager
   fp32 through ``predict_frames``.
5. **Publication.** Passed: the file set and ``gate_report.json`` in ``--out`` and in the
   model's MLflow run under ``int8/`` (what ``backend: int8`` serves), version tag
   ``int8_gate=passed``. Failed: no usable export: the quantised files are deleted, only
   ``gate_report.json`` (``passed: false``) is written to ``--out`` and logged under
   ``int8_rejected/``, version tag ``int8_gate=failed``, and the command exits 1.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaffnet.contract import InputContract
from jaffnet.frames import model_inputs, plan_frame
from pipelines.quantization_gate import MASK_IOU_CHECK, GateLimits, GateReport, run_gate
from pipelines.registry import INT8_ARTIFACT_PATH, INT8_REPORT_FILE, MANIFEST_TAG, LoadedModel

REJECTED_ARTIFACT_PATH = "int8_rejected"  # the report of a failed gate (a passed one: INT8_ARTIFACT_PATH)
GATE_TAG = "int8_gate"  # version tag: passed | failed
DATASET_PARAM = "dataset_dir"  # the run param of a single-dataset training run
MIX_DIR_PARAM, MIX_MANIFEST_PARAM = "data.{}.dir", "data.{}.manifest"  # each dataset of a run (all runs log them)
DEFAULT_CALIBRATION_FRAMES = 300
CALIBRATION_SPLIT, SELECTION_SPLIT, GATE_SPLIT = "train", "val", "test"


@dataclass(frozen=True)
class Rung:
    """One float32 scheme the export may try: module paths kept float32, and whether NNCF's
    accuracy control then restores the most harmful other convolutions (on the val split)."""

    fp32_modules: tuple[str, ...]
    accuracy_control: bool = False


# Without --fp32-modules: the fastest scheme first; then accuracy control, which on a full-width
# model restored 12 of 88 convolutions (3.4x eager at 256², batch 1) where the whole encoder
# float32 runs 2.0x; that scheme last. (On the width-0.125 demo model accuracy control restores
# more, scattered convolutions, and that set can run slower than the whole encoder's: docs/benchmarks/int8.md.) A
# rung passes when its int8 model passes the gate on the validation split, so the test split only
# judges the choice (``export_int8`` picks among the rungs that passed).
FP32_LADDER = (Rung(("encoder.stem",)), Rung(("encoder.stem",), accuracy_control=True), Rung(("encoder",)))


class ExportRefused(ValueError):
    """The export cannot be made as asked (data, destination); the message says why and what to do."""


@dataclass(frozen=True)
class ModelData:
    dataset_dirs: tuple[str, ...]  # one dataset, or each of a mix (training's order)
    manifest: str  # the recorded hash: of the dataset, or of the mix
    source: str  # how it was found, for the report


@dataclass
class Int8Export:
    passed: bool
    report: GateReport
    report_path: Path
    file_set: Path | None  # None when the gate failed
    artifact_path: str | None  # where in the model's run, None when nothing was logged
    run_id: str | None


# ----------------------------------------------------------------------------- which data


def recorded_manifest(loaded: LoadedModel) -> str | None:
    """The dataset manifest hash recorded with the model: version tag, else run tag, else metadata."""
    from mlflow import MlflowClient

    client = MlflowClient()
    if loaded.name and loaded.version:
        manifest = client.get_model_version(loaded.name, loaded.version).tags.get(MANIFEST_TAG)
        if manifest:
            return manifest
    run_id = loaded.run_id
    if run_id:
        manifest = client.get_run(run_id).data.tags.get(MANIFEST_TAG)
        if manifest:
            return manifest
    return loaded.metadata.get(MANIFEST_TAG) or None


def model_data(loaded: LoadedModel, data: str | Path | Sequence[str | Path] | None = None) -> ModelData:
    """The dataset(s) ``loaded`` was trained on (see the module docstring); ``data`` (the dataset,
    or every dataset of a mix) overrides the recorded locations but must hash to the recorded
    manifest. Raises ExportRefused."""
    from pipelines import storage
    from pipelines.data.dataset import manifest_hash, mix_manifest_hash, one_or_more

    expected = recorded_manifest(loaded)
    if expected is None:
        raise ExportRefused(f"{loaded.source} records no dataset manifest ({MANIFEST_TAG}): its training data "
                            "cannot be identified, so it cannot be calibrated or gated on it")
    trained_on = _training_datasets(loaded.run_id) if loaded.run_id else []
    if data is not None:
        locations = [storage.resolve(location) for location in one_or_more(data)]
        source = "--data"
    else:
        if not trained_on:
            raise ExportRefused(f"{loaded.source} records no {DATASET_PARAM} or {MIX_DIR_PARAM.format(0)} (a local "
                                "model directory, or a run without the params): pass --data with its training "
                                f"dataset (manifest {expected})")
        locations = [dataset.location for dataset in trained_on]
        source = f"run {loaded.run_id} param {', '.join(dataset.param for dataset in trained_on)}"
    # What to do when the recorded locations are unreadable or hold other data now.
    hint = "" if data is not None else ("; pass --data with a copy of the training dataset" if len(trained_on) == 1
                                        else "; pass --data once for a copy of each dataset of the mix")
    try:
        found = mix_manifest_hash(locations)
        manifests = {location: manifest_hash(location) for location in locations}
    except (FileNotFoundError, OSError, KeyError, ValueError) as exc:
        raise ExportRefused(f"cannot read the training data {', '.join(locations)} ({source}): {exc}{hint}") from exc
    if found != expected:
        given = (f"dataset {locations[0]} ({source}) has manifest {found}" if len(locations) == 1 else
                 f"datasets {', '.join(f'{loc} (manifest {manifests[loc]})' for loc in locations)} ({source}) "
                 f"hash to manifest {found} together")
        raise ExportRefused(f"{given}, but {loaded.source} was trained on manifest {expected}"
                            f"{_mix_difference(manifests, trained_on)}: refusing to calibrate or gate on other data"
                            f"{hint}")
    return ModelData(tuple(locations), expected, source)


@dataclass(frozen=True)
class _TrainingDataset:
    param: str  # the run param that records it
    location: str
    manifest: str | None  # its own manifest hash, when the run recorded it


def _training_datasets(run_id: str) -> list[_TrainingDataset]:
    """Each dataset the run trained on, from its params: ``data.<i>.*``, else (runs from before
    mixes) ``dataset_dir``."""
    from mlflow import MlflowClient

    params = MlflowClient().get_run(run_id).data.params
    datasets = []
    while (param := MIX_DIR_PARAM.format(len(datasets))) in params:
        datasets.append(_TrainingDataset(param, params[param], params.get(MIX_MANIFEST_PARAM.format(len(datasets)))))
    if not datasets and params.get(DATASET_PARAM):
        datasets.append(_TrainingDataset(DATASET_PARAM, params[DATASET_PARAM], None))
    return datasets


def _mix_difference(given: dict[str, str], trained_on: Sequence[_TrainingDataset]) -> str:
    """For a mix whose run recorded each dataset's manifest: which of its datasets were not given
    and which given ones are not in it; empty otherwise."""
    recorded = {dataset.manifest: dataset for dataset in trained_on if dataset.manifest}
    if len(trained_on) < 2 or len(recorded) < len(trained_on):
        return ""
    missing = [f"{dataset.location} (manifest {manifest})" for manifest, dataset in recorded.items()
               if manifest not in given.values()]
    foreign = [location for location, manifest in given.items() if manifest not in recorded]
    return (f", a mix of {len(trained_on)} datasets"
            + (f"; not given: {', '.join(missing)}" if missing else "")
            + (f"; not in the mix: {', '.join(foreign)}" if foreign else ""))


# ----------------------------------------------------------------------------- calibration


def calibration_samples(dataset_dirs: Sequence[str | Path], count: int, split: str = CALIBRATION_SPLIT) -> list[Any]:
    """Up to ``count`` frames of ``split`` (of a mix: the union of its datasets' splits, ids as
    ``iter_samples`` gives them), evenly spread over its (stable) order, so a split stored class
    by class, or dataset by dataset, still calibrates on every class and dataset."""
    from pipelines.data.dataset import iter_encoded_batches, iter_samples, mix_sample_id

    if count < 1:
        raise ValueError(f"calibration needs at least one frame, got {count}")
    ids = [mix_sample_id(position, str(i), len(dataset_dirs)) for position, location in enumerate(dataset_dirs)
           for batch in iter_encoded_batches(location, split) for i in batch["id"]]
    if not ids:
        raise ExportRefused(f"the {split} split of {', '.join(map(str, dataset_dirs))} holds no frames to "
                            "calibrate on")
    chosen = {ids[i] for i in np.unique(np.linspace(0, len(ids) - 1, min(count, len(ids))).round().astype(int))}
    return list(iter_samples(dataset_dirs, split, keep=chosen.__contains__))


def calibration_batches(samples: Sequence[Any], contract: InputContract, batch_size: int = 8) -> Iterator[np.ndarray]:
    """float32 ``(N, 3, S, S)`` model inputs of ``samples`` as serving makes them: each frame
    through ``plan_frame(contract, ...).split`` (a resized frame or its tiles), then
    ``model_inputs`` (the contract's normalisation)."""
    pending: list[np.ndarray] = []
    for sample in samples:
        frame = sample.image
        pending.extend(plan_frame(contract, frame.shape[0], frame.shape[1]).split(frame))
        while len(pending) >= batch_size:
            yield model_inputs(pending[:batch_size], contract.normalization)
            del pending[:batch_size]
    if pending:
        yield model_inputs(pending, contract.normalization)


# ----------------------------------------------------------------------------- export


def export_int8(loaded: LoadedModel, out_dir: str | Path, *, data: str | Path | Sequence[str | Path] | None = None,
                calibration_frames: int = DEFAULT_CALIBRATION_FRAMES, threads: int | None = None,
                limits: GateLimits = GateLimits(), log_to_run: bool = True, batch_size: int = 8,
                fp32_modules: Sequence[str] | None = None) -> Int8Export:
    """Quantise ``loaded`` to INT8, gate it against fp32 and publish it (module docstring).

    MLflow must already point at the model's tracking server (the command configures it).
    Raises ExportRefused before any work when the data or ``out_dir`` is not usable, ValueError
    for unknown ``fp32_modules``.
    ``fp32_modules``: module paths kept float32; None walks ``FP32_LADDER`` (step 3 of the
    module docstring), a given list is used as it is (without accuracy control).
    """
    from jaffnet.inference import bench, build_predictor, export_onnx
    from jaffnet.inference.int8_files import restored_modules
    from jaffnet.inference.quantization import DEFAULT_MIN_MASK_IOU, AccuracyControl, check_fp32_modules, quantize_int8
    from pipelines.data.dataset import iter_samples

    out_dir = Path(out_dir)
    _check_destination(out_dir)
    if fp32_modules is not None:
        check_fp32_modules(loaded.model, fp32_modules)  # before minutes of work
    dataset = model_data(loaded, data)
    contract, rule = loaded.contract, loaded.rule
    run_id = loaded.run_id
    started = time.perf_counter()

    calibration = calibration_samples(dataset.dataset_dirs, calibration_frames)
    calibration_count = len(calibration)
    calibration_inputs = sum(len(plan_frame(contract, s.image.shape[0], s.image.shape[1])) for s in calibration)
    ladder = FP32_LADDER if fp32_modules is None else (Rung(tuple(fp32_modules)),)
    selection_samples = list(iter_samples(dataset.dataset_dirs, SELECTION_SPLIT)) if len(ladder) > 1 else []
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-staging-", dir=out_dir.parent))
    try:
        metadata = {**loaded.export_metadata(), "input_contract": contract.to_dict(),
                    "decision_rule": rule.to_dict()}
        reference = build_predictor(loaded.model, "eager", threads=threads)
        onnx_path = export_onnx(loaded.model, staging / "fp32.onnx", image_size=contract.image_size)  # once for all rungs
        selection: list[dict[str, Any]] = []
        passed: list[_Quantised] = []  # rungs that passed on val
        for step, rung in enumerate(ladder):
            control = None
            if rung.accuracy_control:
                control = AccuracyControl(list(calibration_batches(selection_samples, contract, batch_size)),
                                          pixel_threshold=rule.pixel_threshold,
                                          min_mask_iou=max(DEFAULT_MIN_MASK_IOU, limits.min_mean_mask_iou))
            file_set = Path(quantize_int8(loaded.model, calibration_batches(calibration, contract, batch_size),
                                          staging / f"rung-{step}", metadata=metadata,
                                          image_size=contract.image_size, onnx_path=onnx_path,
                                          fp32_modules=rung.fp32_modules, accuracy_control=control))
            kept = _Quantised(rung, file_set, restored_modules(file_set),
                              build_predictor(loaded.model, "int8", threads=threads, quantized_path=str(file_set)))
            if not selection_samples or (step == len(ladder) - 1 and not passed):
                break  # the only rung, or the last resort: the test gate judges it
            trial = run_gate(selection_samples, contract, rule, reference, kept.predictor, limits=limits,
                             split=SELECTION_SPLIT, batch_size=batch_size)
            kept.selection_step = _selection_step(rung, kept.restored, trial)
            selection.append(kept.selection_step)
            if trial.passed:
                passed.append(kept)
                if not rung.accuracy_control:
                    break  # the ladder runs fastest first; only accuracy control's speed is unknown
        if len(passed) > 1:
            # Accuracy control restored convolutions scattered between int8 ones: that can run slower than
            # the next rung (on narrow models it did), so the faster of those that passed is kept.
            per_input = _seconds_per_input([q.predictor for q in passed],
                                           calibration_batches(selection_samples, contract, batch_size))
            for quantised, seconds in zip(passed, per_input):
                quantised.selection_step["ms_per_input"] = round(1000 * seconds, 2)
            kept = passed[min(range(len(passed)), key=per_input.__getitem__)]
        elif passed:
            kept = passed[0]
        rung, file_set, restored, candidate = kept.rung, kept.file_set, kept.restored, kept.predictor
        quantised_s = time.perf_counter() - started
        del calibration

        samples = list(iter_samples(dataset.dataset_dirs, GATE_SPLIT))
        gate_started = time.perf_counter()
        report = run_gate(samples, contract, rule, reference, candidate, limits=limits, split=GATE_SPLIT,
                          batch_size=batch_size)
        report.extra.update(
            model=loaded.source, name=loaded.name, version=loaded.version, run_id=run_id,
            dataset_dirs=list(dataset.dataset_dirs), dataset_manifest=dataset.manifest, dataset_source=dataset.source,
            calibration_split=CALIBRATION_SPLIT, calibration_frames=calibration_count,
            calibration_inputs=calibration_inputs, fp32_modules=list(rung.fp32_modules),
            accuracy_control=rung.accuracy_control, fp32_restored=restored, fp32_selection=selection,
            file_set=file_set.name if report.passed else None,
            quantise_s=round(quantised_s, 2), gate_s=round(time.perf_counter() - gate_started, 2),
            machine=bench.machine_description(threads or _torch_threads()),
        )
        return _publish(report, file_set, out_dir, run_id, loaded, log_to_run)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass
class _Quantised:
    """One rung's quantised file set, its predictor and, once judged on val, its report entry."""

    rung: Rung
    file_set: Path
    restored: list[str]
    predictor: Any
    selection_step: dict[str, Any] | None = None


def _seconds_per_input(predictors: Sequence[Any], batches: Iterator[np.ndarray], frames: int = 16,
                       rounds: int = 3) -> list[float]:
    """Median seconds per model input of each predictor, one input at a time (as the line sends
    frames) on up to ``frames`` of ``batches``, the predictors alternating round by round so
    each sees the same machine load."""
    inputs = [batch[i:i + 1] for batch in batches for i in range(len(batch))][:frames]
    for predict in predictors:
        predict(inputs[0])  # warm-up: first-call allocations and kernel selection
    seconds: list[list[float]] = [[] for _ in predictors]
    for _ in range(rounds):
        for timings, predict in zip(seconds, predictors):
            started = time.perf_counter()
            for one in inputs:
                predict(one)
            timings.append((time.perf_counter() - started) / len(inputs))
    return [statistics.median(timings) for timings in seconds]


def _selection_step(rung: Rung, restored: list[str], trial: GateReport) -> dict[str, Any]:
    """One rung of the float32 ladder as the report records it."""
    return {"fp32_modules": list(rung.fp32_modules), "accuracy_control": rung.accuracy_control,
            "restored": len(restored), "split": trial.split, "passed": trial.passed,
            "failed_checks": [check.name for check in trial.checks if not check.passed],
            "verdict_flips": trial.flip_count,
            "mean_mask_iou": next(c.value for c in trial.checks if c.name == MASK_IOU_CHECK)}


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _check_destination(out_dir: Path) -> None:
    """``out_dir`` absent, empty, or an earlier export of ours (it holds INT8_REPORT_FILE), which is replaced."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportRefused(f"--out {out_dir} is a file; an INT8 export is a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / INT8_REPORT_FILE).is_file():
        raise ExportRefused(f"--out {out_dir} is not empty and holds no earlier export ({INT8_REPORT_FILE}); "
                            "pick an empty or new folder")


def _publish(report: GateReport, file_set: Path, out_dir: Path, run_id: str | None,
             loaded: LoadedModel, log_to_run: bool) -> Int8Export:
    if out_dir.is_dir():
        shutil.rmtree(out_dir)  # _check_destination: empty, or our own earlier export
    out_dir.mkdir(parents=True)
    published = None
    if report.passed:
        for entry in file_set.parent.iterdir():  # the kept rung's files only
            shutil.move(str(entry), out_dir / entry.name)
        published = out_dir / file_set.name
    report_path = out_dir / INT8_REPORT_FILE
    report_path.write_text(report.to_json() + "\n")
    artifact_path = None
    if log_to_run and run_id:
        from mlflow import MlflowClient

        client = MlflowClient()
        artifact_path = INT8_ARTIFACT_PATH if report.passed else REJECTED_ARTIFACT_PATH
        if report.passed:
            client.log_artifacts(run_id, str(out_dir), artifact_path=artifact_path)
        else:
            client.log_artifact(run_id, str(report_path), artifact_path=artifact_path)
        if loaded.name and loaded.version:
            client.set_model_version_tag(loaded.name, loaded.version, GATE_TAG,
                                         "passed" if report.passed else "failed")
    return Int8Export(report.passed, report, report_path, published, artifact_path, run_id)
