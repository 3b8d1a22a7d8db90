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
writes one file set to ``out_dir``:

* ``model.xml`` + ``model.bin``: the quantised OpenVINO IR (non-quantised constants stay float32);
* ``jaffnet_int8.json`` (``MANIFEST_NAME``): the weight fingerprint of the fp32 model it
  came from (``weights_fingerprint``), the model config, the caller's metadata (input
  contract...), the calibration size/method, SHA-256 of both model files and the runtime versions.

``load_int8(path, model)`` (the ``int8`` backend of ``build_predictor``) refuses a file
set whose fingerprint is not ``model``'s weights, or whose files changed since.

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
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from jaffnet.contract import INPUT_MULTIPLE
from jaffnet.inference.openvino_runtime import import_runtime, shared_core, signal_stack_guard
from jaffnet.io import file_sha256

MANIFEST_NAME = "jaffnet_int8.json"
MODEL_FILES = ("model.xml", "model.bin")
FORMAT = "jaffnet-int8-openvino"
FORMAT_VERSION = 1
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

    ``out_dir`` is created if needed; the three files (``MODEL_FILES`` + ``MANIFEST_NAME``)
    are overwritten, anything else in it is left alone. Returns the manifest's path: pass it
    (or ``out_dir``) as ``quantized_path`` to ``build_predictor(model, "int8", ...)``.
    Raises ValueError for unusable calibration batches, ImportError without OpenVINO/NNCF.
    """
    from jaffnet.inference.onnx_export import export_onnx, read_onnx_metadata, weights_fingerprint

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
    fused = _batch_norm_convolutions(model)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jaffnet-int8-") as tmp:
        if onnx_path is not None:
            if read_onnx_metadata(onnx_path).get("jaffnet_weights_sha256") != fingerprint:
                raise ValueError(f"{onnx_path} was not exported from this model's weights; export it again")
        else:
            onnx_path = export_onnx(model, Path(tmp) / "model.onnx", image_size=image_size)
        fp32 = shared_core().read_model(str(onnx_path))
        scopes = _node_scopes(onnx_path)  # read once: the full-size model's file is ~170 MB
        float_nodes = _module_nodes(scopes, fp32_modules, fused, onnx_path)
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
        restored_modules = _node_modules(scopes, restored, fused)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_NAME
    manifest_path.unlink(missing_ok=True)  # the manifest is written last: no manifest, no file set
    ov.save_model(quantised, str(out_dir / MODEL_FILES[0]), compress_to_fp16=False)
    shapes = sorted({tuple(frame.shape[1:]) for frame in frames})
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "weights_sha256": fingerprint,
        "config": dict(getattr(model, "config", {})),
        "metadata": metadata_json,
        "image_size": image_size,
        "calibration": {"frames": len(frames), "shapes": [list(shape) for shape in shapes],
                        "method": "; ".join([CALIBRATION_METHOD] + [ACCURACY_CONTROL_METHOD] * bool(accuracy_control))},
        "float32": {"modules": list(fp32_modules), "op_types": list(FLOAT_OP_TYPES), "restored": restored,
                    "restored_modules": restored_modules,
                    "accuracy_control": None if accuracy_control is None else {
                        "held_out_frames": len(held_out), "pixel_threshold": accuracy_control.pixel_threshold,
                        "min_mask_iou": accuracy_control.min_mask_iou}},
        "files": {name: file_sha256(out_dir / name) for name in MODEL_FILES},
        "runtime": {"openvino": ov.get_version(), "nncf": nncf.__version__},
        "quantize_s": round(time.perf_counter() - started, 2),
        "input": "image: float32 (N, C, H, W) normalised as the input contract says, H and W multiples of 32",
        "output": "probability: float32 (N, H, W) sigmoid probabilities",
    }
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest_path


def read_int8_manifest(path: str | Path) -> dict:
    """The manifest of an INT8 file set; ``path`` is its ``jaffnet_int8.json``, its model.xml or its folder."""
    manifest_path = _manifest_path(path)
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} is not an INT8 file set: no {MANIFEST_NAME} (write one with quantize_int8 "
                         "or `jaffnet export --format int8`)") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{manifest_path} is not a readable INT8 manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{manifest_path} is not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{manifest_path} has format_version {manifest.get('format_version')!r}; this jaffnet "
                         f"reads {FORMAT_VERSION}: quantise the model again")
    return manifest


def float32_layers(path: str | Path) -> list[str]:
    """The module paths an INT8 file set keeps float32 (``float32.modules`` plus the convolutions
    accuracy control restored): pass them as ``fp32_modules`` to quantise another model, of
    any width, the same way (``jaffnet bench model --int8-scheme``)."""
    float32 = read_int8_manifest(path).get("float32", {})
    restored = float32.get("restored_modules")
    if restored is None and float32.get("restored"):
        raise ValueError(f"{path} names its restored convolutions by graph node only (an older export): "
                         "export the model again to record their module paths")
    return list(dict.fromkeys([*float32.get("modules", []), *(restored or [])]))


def load_int8(path: str | Path, model: nn.Module, threads: int | None = None):
    """An ``OpenVinoPredictor`` (backend "int8") for the file set at ``path``, after checking
    that it was quantised from ``model``'s weights and that its files are intact."""
    from jaffnet.inference.onnx_export import weights_fingerprint
    from jaffnet.inference.predictor import OpenVinoPredictor

    manifest = read_int8_manifest(path)
    folder = _manifest_path(path).parent
    stored = manifest.get("weights_sha256")
    if stored != weights_fingerprint(model):
        raise ValueError(f"{path} was not quantised from this model's weights "
                         f"({'no fingerprint in its manifest' if stored is None else 'fingerprint differs'}); "
                         "quantise it again with `jaffnet export --format int8`")
    for name in MODEL_FILES:
        expected = manifest.get("files", {}).get(name)
        if not (folder / name).is_file():
            raise ValueError(f"the INT8 file set {folder} lacks {name}")
        if expected != file_sha256(folder / name):
            raise ValueError(f"{folder / name} changed since it was quantised (SHA-256 differs from the manifest)")
    predictor = OpenVinoPredictor(folder / MODEL_FILES[0], threads=threads, backend="int8")
    predictor.manifest = manifest
    predictor.note = (f"INT8 (OpenVINO), calibrated on {manifest['calibration']['frames']} frame(s)")
    return predictor


def synthetic_frames(count: int, image_size: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """``count`` deterministic, image-like synthetic frames, ImageNet-normalised float32
    ``(count, channels, S, S)``: smooth shading, fine texture and a few dark/bright blobs.
    For calibrating random-weight models in benchmarks only: a trained model must be
    calibrated on its own data."""
    from jaffnet.preprocess import normalize

    rng = np.random.default_rng(seed)
    side = image_size
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    frames = np.empty((count, side, side, 3), np.uint8)
    for i in range(count):
        base = rng.uniform(60, 200)
        shade = base + rng.uniform(-40, 40) * xx + rng.uniform(-40, 40) * yy
        coarse = rng.standard_normal((side // 16 + 1, side // 16 + 1)).astype(np.float32)
        coarse = np.kron(coarse, np.ones((16, 16), np.float32))[:side, :side]
        image = shade + 12 * coarse + 6 * rng.standard_normal((side, side)).astype(np.float32)
        for _ in range(rng.integers(1, 4)):  # defect-like blobs
            cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.02, 0.12)
            blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
            image[blob] += rng.choice([-1, 1]) * rng.uniform(40, 90)
        tint = rng.uniform(0.9, 1.1, 3).astype(np.float32)
        frames[i] = np.clip(image[..., None] * tint, 0, 255).astype(np.uint8)
    normalised = normalize(frames, "imagenet")  # random-weight benchmark models are imagenet ones
    if channels == 1:
        normalised = normalised.mean(axis=1, keepdims=True)
    return np.ascontiguousarray(normalised, dtype=np.float32)


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
    from jaffnet.inference.checks import check_batch

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


def _batch_norm_convolutions(model: nn.Module) -> dict[str, str]:
    """``{batch-norm path: path of the Conv2d whose output it normalises}``, found by running
    the model once with hooks. The ONNX exporter fuses each such pair into one Conv node that
    records only the batch norm's module path; this map lets a caller name the convolution."""
    import torch

    outputs: dict[int, tuple[str, torch.Tensor]] = {}  # id(output) -> (conv path, output kept alive)
    pairs: dict[str, str] = {}

    def conv_hook(name):
        return lambda module, inputs, output: outputs.__setitem__(id(output), (name, output))

    def norm_hook(name):
        def hook(module, inputs, output):
            source = outputs.get(id(inputs[0]))
            if source is not None and source[1] is inputs[0]:
                pairs[name] = source[0]
        return hook

    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(conv_hook(name)))
        elif isinstance(module, nn.BatchNorm2d):
            hooks.append(module.register_forward_hook(norm_hook(name)))
    training = model.training
    try:
        model.eval()
        parameter = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, model.in_channels, 2 * INPUT_MULTIPLE, 2 * INPUT_MULTIPLE,
                              dtype=parameter.dtype, device=parameter.device))
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return pairs


def _node_scopes(onnx_path: str | Path) -> dict[str, list[str]]:
    """``{ONNX node name: its module paths}`` (the exporter records them in each node's
    ``pkg.torch.onnx.name_scopes`` metadata, under ``ProbabilityMap.model``; the ``model.`` prefix is dropped)."""
    import ast

    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    scopes_of = {}
    for node in proto.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        if not scopes:
            continue
        try:
            scopes = ast.literal_eval(scopes)
        except (ValueError, SyntaxError):
            continue
        scopes_of[node.name] = [scope.removeprefix("model.") for scope in scopes if scope.startswith("model.")]
    return scopes_of


def _node_modules(scopes_of: dict[str, list[str]], nodes: Sequence[str], fused: dict[str, str]) -> list[str]:
    """The module path of each OpenVINO/ONNX node in ``nodes`` (a convolution fused with its
    batch norm is named by the convolution)."""
    modules = set()
    for node in nodes:
        scopes = scopes_of.get(node.removesuffix("/WithoutBiases"))
        if scopes:
            modules.add(fused.get(scopes[-1], scopes[-1]))
    return sorted(modules)


def _module_nodes(scopes_of: dict[str, list[str]], modules: Sequence[str], fused: dict[str, str],
                  onnx_path: str | Path) -> list[str]:
    """Names of the ONNX nodes exported from ``modules`` (``_node_scopes``); a convolution
    fused with its batch norm (``fused``) is found under either's path."""
    if not modules:
        return []
    aliases = {m: [m] + [norm for norm, conv in fused.items() if conv == m or conv.startswith(m + ".")]
               for m in modules}
    nodes, found = [], set()
    for node, scopes in scopes_of.items():
        hits = {m for m, paths in aliases.items() for path in paths for scope in scopes
                if scope == path or scope.startswith(path + ".")}
        if hits:
            nodes.append(node)
            found |= hits
    missing = [m for m in modules if m not in found]
    if missing:
        raise ValueError(f"{onnx_path} records no layers of {missing}: pass an ONNX file written by export_onnx "
                         "(it keeps module names), or fewer fp32_modules")
    return nodes


def _manifest_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        return path / MANIFEST_NAME
    if path.name in MODEL_FILES:
        return path.with_name(MANIFEST_NAME)
    return path


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
