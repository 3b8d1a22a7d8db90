"""INT8 post-training quantisation for CPU inference: OpenVINO + NNCF.

``quantize_int8(model, calibration_batches, out_dir, ...)`` exports the model to ONNX
(``export_onnx``: sigmoid included, dynamic batch/height/width), reads it into OpenVINO,
and quantises it with NNCF's post-training quantisation: convolution weights int8,
symmetric, per output channel; convolution inputs int8, per tensor, with ranges measured
(min-max) on the calibration frames; then NNCF's fast bias correction. Only convolutions
run in int8: upsampling, attention products/reductions, residual sums and concatenations
stay float32 (``FLOAT_OP_TYPES``), and so do the layers of ``fp32_modules`` (default the
encoder's stem, whose input is the image itself). On a trained demo model quantising
those too cost most of the accuracy (mask IoU with fp32 0.73 instead of 0.89) for 1.5x
the speed of this scheme; keeping the whole ``encoder`` in float32 lifted it to 0.95 but
ran 4.5x slower (docs/benchmarks/int8.md, "INT8 and OpenVINO backends"). ``AccuracyControl`` instead restores only the
convolutions that cost held-out masks the most (NNCF's accuracy-control quantisation). It
writes one INT8 file set to ``out_dir`` (the IR + the manifest: ``int8_files``), which the
``int8`` backend (``int8_backend``) runs.

Why OpenVINO and not ONNX Runtime's QDQ quantisation: on the 2-core Xeon with AVX512-VNNI
and AMX the full-size model at 256x256 ran 4x faster through OpenVINO's int8 kernels
(docs/benchmarks/int8.md). Both runtimes are optional (the ``openvino`` extra); this
module imports them only when called. Calibration inputs, like every predictor's, are
float32 ``(N, C, H, W)`` batches normalised as the model's input contract says.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from jaffnet.contract import INPUT_MULTIPLE
from jaffnet.inference.checks import check_batch
from jaffnet.inference.int8_files import write_file_set
from jaffnet.inference.onnx_export import exported_onnx, weights_fingerprint
from jaffnet.inference.onnx_scopes import batch_norm_convolutions, module_nodes, node_modules, node_scopes
from jaffnet.inference.openvino_runtime import import_runtime, shared_core, signal_stack_guard
CALIBRATION_METHOD = ("NNCF post-training quantisation, preset MIXED: convolution weights int8 symmetric per "
                      "output channel, convolution inputs int8 asymmetric per tensor, min-max ranges; fast bias "
                      "correction")
# Operations NNCF would quantise too but which stay float32 here (only convolutions run in int8).
FLOAT_OP_TYPES = ("Interpolate", "Multiply", "Add", "Concat", "ReduceMean", "ReduceMax", "GroupConvolution", "MaxPool")
DEFAULT_FP32_MODULES = ("encoder.stem",)  # module paths (``model.named_modules()``) kept float32
MAX_CALIBRATION_FRAMES = 10_000  # NNCF's statistics pass keeps every frame in memory
# What accuracy control aims for on held-out frames. The margin above the export gate's 0.95 is for the
# held-out -> test gap and, above all, for verdicts: aiming at 0.96 left the image scores of borderline test
# frames close enough to fp32's to flip one verdict of 96 on two models; 0.975 restored 12 of 88
# convolutions of a full-width model and passed its test gate with no flip (docs/benchmarks/int8.md, "Accuracy control").
DEFAULT_MIN_MASK_IOU = 0.975
ACCURACY_CONTROL_METHOD = ("then NNCF accuracy control: the convolutions whose quantisation costs the most mask IoU "
                           "with fp32 on held-out frames restored to float32, most harmful first")


@dataclass(frozen=True)
class AccuracyControl:
    """Quantise, then give convolutions back their float32 weights and inputs, the most
    harmful first (NNCF's accuracy-control quantisation ranks them on these frames), until
    the int8 model's pixel masks agree with fp32's: mean per-frame IoU >= ``min_mask_iou``
    on ``inputs`` at ``pixel_threshold`` (two empty masks count as IoU 1).

    ``inputs``: normalised float32 ``(N, C, H, W)`` batches NOT used for calibration (the
    validation split, say). Costs one evaluation of those frames per convolution for the
    ranking plus one per restored group: minutes on a small model, far longer on a large one.
    """

    inputs: Sequence[np.ndarray]
    pixel_threshold: float
    min_mask_iou: float = DEFAULT_MIN_MASK_IOU

    def __post_init__(self):
        if not 0.0 <= self.pixel_threshold <= 1.0:
            raise ValueError(f"pixel_threshold must be in [0, 1], got {self.pixel_threshold}")
        if not 0.0 < self.min_mask_iou <= 1.0:
            raise ValueError(f"min_mask_iou must be in (0, 1], got {self.min_mask_iou}")


def quantize_int8(model: nn.Module, calibration_batches: Iterable[np.ndarray], out_dir: str | Path, *,
                  metadata: dict | None = None, image_size: int = 256, onnx_path: str | Path | None = None,
                  fp32_modules: Sequence[str] = DEFAULT_FP32_MODULES,
                  accuracy_control: AccuracyControl | None = None) -> Path:
    """Quantise ``model`` to INT8 for CPU inference and write its file set into ``out_dir``.

    ``calibration_batches``: normalised float32 ``(N, C, H, W)`` numpy batches, as the
    model's predictor gets them (any N, sides multiples of 32; the frames of all batches are
    used, one at a time: 100-300 real frames is typical). ``metadata`` (JSON-serialisable:
    input contract, source...) is stored verbatim in the manifest. ``image_size`` is the
    side of the example input of the ONNX export; the quantised model still takes any batch
    and any multiple-of-32 sides. ``onnx_path``: an fp32 ONNX file ``export_onnx`` (or
    ``jaffnet export``) already wrote from this model, quantised instead of exporting again
    (refused unless its weight fingerprint is ``model``'s). ``fp32_modules``: module paths of
    ``model`` (e.g. ``"encoder.stem"``, ``"encoder"``, ``"decoder.stages.3"``) whose layers stay
    float32: more accurate, slower; ``()`` quantises every convolution. ``accuracy_control``:
    then restore float32 convolutions until held-out masks agree (``AccuracyControl``); the
    manifest lists them under ``float32.restored``.

    ``out_dir`` is created if needed; the three files of the set (``int8_files``)
    are overwritten, anything else in it is left alone. Returns the manifest's path: pass it
    (or ``out_dir``) as ``quantized_path`` to ``build_predictor(model, "int8", ...)``.
    Raises ValueError for unusable calibration batches, ImportError without OpenVINO/NNCF.
    """
    if not isinstance(model, nn.Module) or not hasattr(model, "in_channels"):
        raise TypeError(f"expected a JAFFNet model, got {type(model).__name__}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0 or image_size % INPUT_MULTIPLE:
        raise ValueError(f"image_size must be a positive multiple of {INPUT_MULTIPLE}, got {image_size!r}")
    fp32_modules = check_fp32_modules(model, fp32_modules)
    ov, nncf = import_runtime(with_nncf=True)
    frames = _calibration_frames(calibration_batches, model.in_channels)
    held_out = None if accuracy_control is None else _calibration_frames(accuracy_control.inputs, model.in_channels)
    try:
        metadata_json = json.loads(json.dumps(metadata or {}, sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serialisable: {exc}") from exc

    fingerprint = weights_fingerprint(model)
    fused = batch_norm_convolutions(model)
    started = time.perf_counter()
    with exported_onnx(model, image_size, onnx_path) as onnx_file:
        fp32 = shared_core().read_model(str(onnx_file))
        scopes = node_scopes(onnx_file)  # read once: the full-size model's file is ~170 MB
        float_nodes = module_nodes(scopes, fp32_modules, fused, onnx_file)
        # OpenVINO keeps ONNX node names, splitting a convolution's bias off as "<name>/WithoutBiases".
        present = {op.get_friendly_name() for op in fp32.get_ordered_ops()}
        ignored = sorted(name for node in float_nodes for name in (node, f"{node}/WithoutBiases") if name in present)
        options = dict(subset_size=len(frames), preset=nncf.QuantizationPreset.MIXED, fast_bias_correction=True,
                       ignored_scope=nncf.IgnoredScope(names=ignored, types=list(FLOAT_OP_TYPES), validate=False))
        with _quiet_nncf(nncf), signal_stack_guard():  # NNCF makes and drops cores of its own
            if accuracy_control is None:
                quantised = nncf.quantize(fp32, nncf.Dataset(frames), **options)
            else:
                quantised = _quantize_with_accuracy_control(nncf, fp32, frames, held_out, accuracy_control,
                                                            options)
        restored = [] if accuracy_control is None else _float_convolutions(quantised, exclude=ignored)
    shapes = sorted({tuple(frame.shape[1:]) for frame in frames})
    manifest = {
        "weights_sha256": fingerprint,
        "config": dict(getattr(model, "config", {})),
        "metadata": metadata_json,
        "image_size": image_size,
        "calibration": {"frames": len(frames), "shapes": [list(shape) for shape in shapes],
                        "method": "; ".join([CALIBRATION_METHOD] + [ACCURACY_CONTROL_METHOD] * bool(accuracy_control))},
        "float32": {"modules": list(fp32_modules), "op_types": list(FLOAT_OP_TYPES), "restored": restored,
                    "restored_modules": node_modules(scopes, restored, fused),
                    "accuracy_control": None if accuracy_control is None else {
                        "held_out_frames": len(held_out), "pixel_threshold": accuracy_control.pixel_threshold,
                        "min_mask_iou": accuracy_control.min_mask_iou}},
        "runtime": {"openvino": ov.get_version(), "nncf": nncf.__version__},
        "quantize_s": round(time.perf_counter() - started, 2),
        "input": "image: float32 (N, C, H, W) normalised as the input contract says, H and W multiples of 32",
        "output": "probability: float32 (N, H, W) sigmoid probabilities",
    }
    return write_file_set(out_dir, lambda xml: ov.save_model(quantised, str(xml), compress_to_fp16=False), manifest)


def check_fp32_modules(model: nn.Module, modules: Sequence[str]) -> tuple[str, ...]:
    """``modules`` as a tuple of distinct module paths of ``model``; ValueError naming the unknown ones."""
    if isinstance(modules, str):
        modules = (modules,)
    names = {name for name, _ in model.named_modules() if name}
    unknown = [m for m in modules if m not in names]
    if unknown:
        tops = sorted({name.split(".")[0] for name in names})
        raise ValueError(f"fp32_modules {unknown} are not modules of this model (its top-level ones: {tops}; "
                         "deeper ones as in model.named_modules(), e.g. 'encoder.stem')")
    return tuple(dict.fromkeys(modules))


def runtime_available() -> bool:
    """Whether OpenVINO and NNCF can be imported (``pip install jaffnet[openvino]``)."""
    try:
        import_runtime(with_nncf=True)
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------- helpers


def _quantize_with_accuracy_control(nncf, fp32, frames: list[np.ndarray], held_out: list[np.ndarray],
                                    control: AccuracyControl, options: dict):
    """``nncf.quantize_with_accuracy_control`` with the mean mask IoU against fp32 as its metric
    (fp32 scores 1 against itself, so the allowed absolute drop is ``1 - min_mask_iou``)."""
    from jaffnet.metrics import mask_iou

    reference = shared_core().compile_model(fp32, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    output = reference.outputs[0]
    items = [(frame, reference(frame)[output][0] >= control.pixel_threshold) for frame in held_out]

    def mask_iou_with_fp32(compiled, validation_items) -> tuple[float, list[float]]:
        out = compiled.outputs[0]
        per_frame = [mask_iou(compiled(frame)[out][0] >= control.pixel_threshold, mask)
                     for frame, mask in validation_items]
        return float(np.mean(per_frame)), per_frame

    return nncf.quantize_with_accuracy_control(
        fp32, nncf.Dataset(frames), nncf.Dataset(items, lambda item: item[0]), mask_iou_with_fp32,
        max_drop=1.0 - control.min_mask_iou, drop_type=nncf.DropType.ABSOLUTE, **options)


def _float_convolutions(quantised, exclude: Sequence[str]) -> list[str]:
    """Names of the convolutions left float32 (no FakeQuantize on their input) beyond ``exclude``."""
    excluded = set(exclude)
    names = []
    for op in quantised.get_ordered_ops():
        if op.get_type_name() != "Convolution" or op.get_friendly_name() in excluded:
            continue
        if op.input(0).get_source_output().get_node().get_type_name() != "FakeQuantize":
            names.append(op.get_friendly_name())
    return sorted(names)


def _calibration_frames(batches: Iterable[np.ndarray], channels: int) -> list[np.ndarray]:
    """Every frame of ``batches`` as its own float32 (1, C, H, W) array, validated."""
    if isinstance(batches, np.ndarray):
        batches = [batches]  # one batch passed bare
    frames: list[np.ndarray] = []
    for index, batch in enumerate(batches):
        try:
            batch = check_batch(batch, channels)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"calibration batch {index}: {exc}") from None
        if not np.isfinite(batch).all():
            raise ValueError(f"calibration batch {index} holds NaN or infinite values")
        frames.extend(np.ascontiguousarray(batch[i:i + 1]) for i in range(batch.shape[0]))
        if len(frames) > MAX_CALIBRATION_FRAMES:
            raise ValueError(f"more than {MAX_CALIBRATION_FRAMES} calibration frames; a few hundred are enough")
    if not frames:
        raise ValueError("no calibration frames: pass at least one (N, C, H, W) batch")
    return frames


@contextlib.contextmanager
def _quiet_nncf(nncf):
    """NNCF logs INFO lines and draws progress bars on stdout; keep a CLI's output readable."""
    logger = logging.getLogger("nncf")
    level = logger.level
    nncf.set_log_level(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf.set_log_level(level or logging.INFO)
