"""``jaffnet export``, ``jaffnet bench model``, ``jaffnet import-weights`` and ``jaffnet calibrate``:
what is done with a trained model besides training and serving it."""

from __future__ import annotations

import argparse
import json
import sys
import time

from jaffnet.contract import INPUT_MULTIPLE, check_image_size
from pipelines.cli_options import add_log_selection, add_tracking_uri, positive_int

DEFAULT_BENCH_SIZE = 256  # the paper's FPS figure is at 256x256
CPU_BENCH = {"backends": ("eager", "fused", "onnx", "cpu-bf16"), "batch_sizes": (1, 8), "iters": 2,
             "train_batch": 4, "train_precisions": ("fp32",)}
GPU_BENCH = {"backends": ("eager", "fused", "cuda-fp16", "cuda-bf16"), "batch_sizes": (1, 8, 32, 64), "iters": 30,
             "train_batch": 32, "train_precisions": ("fp32", "bf16")}
INT8_OPTIONS = {"calibration_frames": "--calibration-frames", "data": "--data", "threads": "--threads",
                "fp32_modules": "--fp32-modules"}
ONNX_OPTIONS = {"static": "--static", "image_size": "--image-size"}
MODEL_HELP = "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model or a saved model directory"


def add_commands(subparsers, bench_subparsers) -> None:
    _add_export(subparsers)
    _add_bench_model(bench_subparsers)
    _add_import_weights(subparsers)
    _add_calibrate(subparsers)


def _add_calibrate(subparsers) -> None:
    calibrate = subparsers.add_parser(
        "calibrate", help="recalibrate a registered model's OK/NG rule for an escape or overkill target, "
                          "without retraining",
        description="Score the frames of a split (--data), or the frames operators reviewed in a decision log "
                    "(--log), through the model's own input contract, choose the image "
                    "threshold for the target at the model's pixel threshold, and register a NEW version with the "
                    "same weights (hash recorded), the new rule, the counts and one-sided 95 % Clopper-Pearson "
                    "upper bounds on escape and overkill rates, and lineage tags. A calibration set too small to "
                    "support the target is reported and stored as a warning. No alias moves unless --promote. "
                    "From a log the labels are the operators' verdicts and each reviewed frame is weighted by "
                    "the frames it stands for (1/sample_rate, scaled per line and logged decision to the kept "
                    "frames); the bounds are on the effective counts.")
    calibrate.add_argument("--model", required=True, help="models:/NAME@ALIAS or models:/NAME/VERSION")
    frames = calibrate.add_mutually_exclusive_group(required=True)
    frames.add_argument("--data", help="ingested dataset: a folder or s3://bucket/prefix")
    frames.add_argument("--log", metavar="DIR", help="a decision log folder (decision_log.folder): calibrate on the "
                                                     "kept frames operators reviewed")
    calibrate.add_argument("--split", choices=("train", "val", "test"),
                           help="with --data: frames to calibrate on (default val; claim rates on another split)")
    add_log_selection(calibrate)
    target = calibrate.add_mutually_exclusive_group()
    target.add_argument("--max-escape-rate", type=float, metavar="R",
                        help="the lowest overkill whose escape rate is at most R, e.g. 0.05 (the default target)")
    target.add_argument("--max-overkill-rate", type=float, metavar="R",
                        help="the fewest escapes whose overkill rate is at most R")
    target.add_argument("--escape-cost", type=float, metavar="C",
                        help="min overkill_rate + C x escape_rate (1: balanced error)")
    calibrate.add_argument("--min-defect-area-px", type=int, metavar="N",
                           help="NG also needs a region of N px above the pixel threshold (default: the model's)")
    calibrate.add_argument("--promote", action="store_true", help="move the champion alias to the new version")
    calibrate.add_argument("--out", metavar="DIR", help="with --data: also write the calibration split's report "
                                                        "here (frames.csv, curves, operating table)")
    calibrate.add_argument("--batch-size", type=positive_int, default=8, help="model inputs per forward")
    add_tracking_uri(calibrate)
    calibrate.set_defaults(func=calibrate_command)


def _add_export(subparsers) -> None:
    export = subparsers.add_parser(
        "export", help="write a model as ONNX (probabilities out, dynamic batch and size), or as a gated INT8 "
                       "CPU model",
        description="Export a trained model for ONNX Runtime. The graph includes the sigmoid: input 'image' "
                    "float32 (N,3,H,W) normalised as the model's input contract says (jaffnet.preprocess), "
                    "output 'probability' float32 (N,H,W). "
                    "--format int8: quantise with calibration on the model's own training frames (through its "
                    "input contract), then gate it against fp32 on the test split (each saliency metric within "
                    "0.01, OK/NG verdicts agreeing on >= 99% of frames, mean mask IoU >= 0.95); a passed export "
                    "and its gate_report.json go to --out and to the model's MLflow run under int8/ (what "
                    "serving's backend: int8 loads). A failed gate exits 1 and leaves only the report.")
    export.add_argument("--model", required=True, help=MODEL_HELP)
    export.add_argument("--format", default="onnx", choices=("onnx", "int8"), help="export format (default: onnx)")
    export.add_argument("--out", required=True, metavar="PATH",
                        help="onnx: the file to write, e.g. jaffnet.onnx; int8: a new or empty folder")
    export.add_argument("--calibration-frames", type=positive_int, metavar="N",
                        help="int8: training-split frames to calibrate on (default 300)")
    export.add_argument("--data", metavar="DATASET", action="append",
                        help="int8: the model's training dataset, if not where its run recorded it (repeat for each "
                             "dataset of a mix; together they must hash to the manifest recorded with the model)")
    export.add_argument("--threads", type=positive_int, help="int8: CPU threads for the gate's predictors")
    export.add_argument("--fp32-modules", type=_module_list, metavar="PATH[,PATH]",
                        help="int8: modules kept float32 (default: only encoder.stem if that passes the gate on "
                             "the validation split; else that scheme with NNCF accuracy control, which restores the "
                             "most harmful convolutions to float32 on the validation split (minutes), if it passes "
                             "and runs faster than the whole encoder float32 (when that passes too); else the whole "
                             "encoder)")
    export.add_argument("--image-size", type=_positive_multiple_of_32, default=None,
                        help="example input side (default: the model's metadata image_size, else 256)")
    export.add_argument("--static", action="store_true", help="fix batch 1 at --image-size instead of dynamic shapes")
    add_tracking_uri(export)
    export.set_defaults(func=export_command)


def _add_bench_model(bench_subparsers) -> None:
    bench = bench_subparsers.add_parser(
        "model", help="inference backends vs eager, and training throughput, of the full-size model",
        description="Images/s and latency per backend, with speed-ups against eager measured in the same "
                    "process. Defaults: CPU backends at batch 1 and 8; on a GPU also the CUDA backends.")
    bench.add_argument("--model", help=f"{MODEL_HELP} (default: random-weight full-size JAFFNet())")
    add_tracking_uri(bench)  # where --model's registry is
    bench.add_argument("--width", type=float, default=1.0, help="width of the random-weight model (default 1.0)")
    bench.add_argument("--image-size", type=_size_list, action="extend", metavar="S[,S]",
                       help="image side(s), repeatable (default: 256 and the training config's image_size)")
    bench.add_argument("--batch-sizes", type=_int_list, metavar="B,B", help="batch sizes (default: 1,8 on CPU; "
                       "1,8,32,64 on GPU)")
    bench.add_argument("--backends", type=_str_list, metavar="NAME,NAME",
                       help="backends to time (eager is always added as the reference)")
    bench.add_argument("--device", choices=("cpu", "cuda"), help="only this device (default: cpu, and cuda if present)")
    bench.add_argument("--iters", type=int, help="timed batches per row (default: 2 on CPU, 30 on GPU)")
    bench.add_argument("--warmup", type=int, default=1, help="untimed batches per row (default 1)")
    bench.add_argument("--threads", type=int, help="CPU threads for torch and ONNX Runtime (default: torch's)")
    bench.add_argument("--int8-scheme", metavar="MANIFEST",
                       help="time int8 with the float32 layers an INT8 export kept (its jaffnet_int8.json or "
                            "folder: its float32 modules and the convolutions accuracy control restored) instead of "
                            "only the encoder stem; adds int8 to the backends")
    bench.add_argument("--train-batch-size", type=int, help="training batch (default: 4 on CPU, 32 on GPU; 0 skips)")
    bench.add_argument("--json", metavar="FILE", help="also write all results as JSON")
    bench.set_defaults(func=bench_model_command)


def _add_import_weights(subparsers) -> None:
    imports = subparsers.add_parser(
        "import-weights", help="register weights trained by the authors' code as a model version",
        description="Map a state_dict saved by the authors' code (github.com/yfhdm/yfhdm-JAFFNet, "
                    "models/JAFFNet.py) onto JAFFNet() and register it in MLflow as a new version of --name "
                    "(no alias is moved). The file is read without unpickling anything: .safetensors, or a "
                    "torch file loaded with weights_only=True. The version's metadata and tags record the "
                    "origin, file name and sha256; its decision thresholds are 0.5 and NOT calibrated.")
    imports.add_argument("file", metavar="FILE", help="the weights file (.pth/.pt state_dict or .safetensors)")
    imports.add_argument("--from", dest="origin", required=True, choices=("authors",),
                         help="whose naming the file uses")
    imports.add_argument("--name", default="jaffnet-authors", help="registered model name (default: jaffnet-authors)")
    imports.add_argument("--image-size", type=_positive_multiple_of_32, default=256,
                         help="input side of the model's resize contract (default: the paper's 256)")
    add_tracking_uri(imports)
    imports.set_defaults(func=import_weights_command)


# ----------------------------------------------------------------------------- handlers


def export_command(args) -> int:
    from jaffnet.inference import export_onnx

    other_format, other_options = ("onnx", ONNX_OPTIONS) if args.format == "int8" else ("int8", INT8_OPTIONS)
    misplaced = [flag for key, flag in other_options.items() if getattr(args, key)]
    if misplaced:  # refused, not silently ignored
        return _fail(f"{', '.join(misplaced)} only appl{'ies' if len(misplaced) == 1 else 'y'} to "
                     f"--format {other_format}")
    loaded = _load(args.model, args.tracking_uri)
    if loaded is None:
        return 1
    if args.format == "int8":
        return _export_int8(args, loaded)
    image_size = args.image_size or loaded.metadata.get("image_size") or DEFAULT_BENCH_SIZE
    try:
        check_image_size(image_size, "the model's metadata image_size")
    except ValueError as exc:
        return _fail(f"{exc}; pass --image-size")
    start = time.perf_counter()
    metadata = loaded.export_metadata()
    try:
        path = export_onnx(loaded.model, args.out, image_size=image_size, dynamic=not args.static, metadata=metadata)
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    shape = f"(1, 3, {image_size}, {image_size})" if args.static else "(N, 3, 32k, 32m)"
    size_mb = path.stat().st_size / 2**20
    print(f"wrote {path} ({size_mb:.1f} MiB) in {time.perf_counter() - start:.1f} s: "
          f"input 'image' {shape} -> output 'probability'")
    return 0


def _export_int8(args, loaded) -> int:
    from mlflow.exceptions import MlflowException

    from pipelines.int8_export import ExportRefused, export_int8
    from pipelines.registry import redact

    started = time.perf_counter()
    try:
        calibration = {"calibration_frames": args.calibration_frames} if args.calibration_frames else {}
        export = export_int8(loaded, args.out, data=args.data, threads=args.threads,
                             fp32_modules=args.fp32_modules, **calibration)
    except (ExportRefused, FileNotFoundError, ImportError, ValueError) as exc:  # ImportError: no openvino extra
        return _fail(f"cannot export {args.model} as int8: {exc}")
    except MlflowException as exc:
        return _fail(redact(f"cannot export {args.model} as int8: {exc}"))
    for step in export.report.extra.get("fp32_selection", []):
        scheme = _float32_scheme(step["fp32_modules"], step.get("accuracy_control"), step["restored"])
        print(f"float32 {scheme}: gate on {step['split']} "
              f"{'passed' if step['passed'] else 'failed (' + ', '.join(step['failed_checks']) + ')'}, "
              f"mean mask IoU {step['mean_mask_iou']:.4f}, {step['verdict_flips']} verdict flip(s)"
              + (f", {step['ms_per_input']:.1f} ms per input" if "ms_per_input" in step else ""))
    extra = export.report.extra
    print(f"float32 modules: "
          f"{_float32_scheme(extra['fp32_modules'], extra.get('accuracy_control'), len(extra['fp32_restored']))}")
    print(export.report.format())
    logged = f"; logged to MLflow run {export.run_id} under {export.artifact_path}/" if export.artifact_path else ""
    if not export.passed:
        print(f"error: the INT8 model failed its accuracy gate: no export written; the report is "
              f"{export.report_path}{logged}", file=sys.stderr)
        return 1
    print(f"wrote the INT8 file set ({export.file_set.name}) and {export.report_path.name} to "
          f"{export.report_path.parent} in {time.perf_counter() - started:.1f} s{logged}")
    return 0


def bench_model_command(args) -> int:
    import torch

    from jaffnet.inference import bench
    from jaffnet.model import JAFFNet
    from pipelines.training import bench as training_bench
    from pipelines.training.config import load_config

    started = time.perf_counter()
    if args.threads is not None:
        if args.threads < 1:
            return _fail("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if args.model:
        loaded = _load(args.model, args.tracking_uri)
        if loaded is None:
            return 1
        model, model_label = loaded.model, args.model
    else:
        try:
            model = JAFFNet(width=args.width).eval()
        except ValueError as exc:
            return _fail(str(exc))
        model_label = f"random-weight JAFFNet(width={args.width:g})"
    int8_fp32_modules = None
    if args.int8_scheme:
        from jaffnet.inference.int8_files import float32_layers

        try:
            int8_fp32_modules = float32_layers(args.int8_scheme)
        except ValueError as exc:
            return _fail(f"--int8-scheme: {exc}")
    sizes = _unique(args.image_size or [DEFAULT_BENCH_SIZE, _training_image_size()])
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices and not torch.cuda.is_available():
        return _fail("--device cuda: torch sees no CUDA GPU on this machine")

    print(f"jaffnet bench model: {model_label}, {sum(p.numel() for p in model.parameters()):,} parameters")
    print(bench.machine_description(threads))
    report: dict = {"model": model_label, "machine": bench.machine_description(threads), "inference": [],
                    "training": [], "skipped": {}}
    for device in devices:
        plan = GPU_BENCH if device == "cuda" else CPU_BENCH
        backends = _unique(["eager", *(args.backends or plan["backends"]), *(["int8"] if args.int8_scheme else [])])
        batch_sizes = args.batch_sizes or plan["batch_sizes"]
        iters = args.iters or plan["iters"]
        print(f"\n== inference on {device}: sizes {sizes}, batches {list(batch_sizes)}, {iters} timed batch(es) "
              f"after {args.warmup} warm-up per row", flush=True)
        predictors, skipped = bench.build_predictors(model, backends, device=device, threads=args.threads,
                                                     image_size=sizes[0],  # int8 calibrates at this size
                                                     int8_fp32_modules=int8_fp32_modules)
        if int8_fp32_modules is not None and any(label.startswith("int8") for label in predictors):
            print(f"  int8: float32 layers of {args.int8_scheme}: {', '.join(int8_fp32_modules) or 'none'}")
        for label, reason in skipped.items():
            print(f"  skipped {label}: {reason}")
        report["skipped"].update(skipped)
        results = bench.bench_inference(predictors, sizes, batch_sizes, iters=iters, warmup=args.warmup)
        print(bench.format_inference(results), flush=True)
        report["inference"] += bench.as_dicts(results)
        del predictors

        train_batch = plan["train_batch"] if args.train_batch_size is None else args.train_batch_size
        if train_batch:
            print(f"\n== training on {device} (one process, forward + HybridLoss + backward + Adam step: "
                  f"train.yaml's recipe)", flush=True)
            try:
                recipe = load_config(None).replaced(**model.config)  # this model, train.yaml's rest
                training = [training_bench.bench_training(recipe, size, train_batch, iters=iters,
                                                          warmup=args.warmup, device=device, precision=precision)
                            for size in sizes for precision in plan["train_precisions"]]
            except ValueError as exc:
                return _fail(str(exc))
            print(training_bench.format_training(training), flush=True)
            report["training"] += bench.as_dicts(training)

    elapsed = time.perf_counter() - started
    print(f"\nspeed-ups are against eager in this process; the whole benchmark took {elapsed:.0f} s")
    if args.json:
        report["elapsed_s"] = elapsed
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


def import_weights_command(args) -> int:
    from mlflow.exceptions import MlflowException

    from jaffnet.io import WeightsError
    from pipelines.registry import configure_tracking, redact
    from pipelines.weights_import import import_weights

    started = time.perf_counter()
    configure_tracking(args.tracking_uri)
    try:
        imported = import_weights(args.file, origin=args.origin, name=args.name, image_size=args.image_size)
    except (FileNotFoundError, WeightsError) as exc:
        return _fail(f"cannot import {args.file}: {exc}")
    except MlflowException as exc:  # an unreachable server, a refused write
        return _fail(redact(f"cannot register {args.file}: {exc}"))
    print(f"registered {imported.model_uri} ({imported.parameters:,} parameters) from {args.file} "
          f"(sha256 {imported.sha256}, MLflow run {imported.run_id}) in {time.perf_counter() - started:.1f} s")
    print("  decision thresholds are 0.5 and NOT calibrated; evaluate it on your data before serving "
          f"(jaffnet evaluate --model {imported.model_uri} --data ...)")
    return 0


# ----------------------------------------------------------------------------- helpers


def _float32_scheme(modules: list[str], accuracy_control: bool | None, restored: int) -> str:
    """How an INT8 export's float32 layers read on the console: the module paths, and what accuracy control added."""
    control = f" + accuracy control ({restored} convolution(s) restored)" if accuracy_control else ""
    return ",".join(modules) + control


def _load(uri: str, tracking_uri: str | None):
    from jaffnet.io import WeightsError
    from pipelines.registry import configure_tracking, load_model

    if "://" in uri or uri.startswith(("models:/", "runs:/")):
        configure_tracking(tracking_uri)
    try:
        return load_model(uri)
    except (FileNotFoundError, LookupError, WeightsError) as exc:
        _fail(f"cannot load model {uri!r}: {exc}")
        return None


def _training_image_size() -> int:
    """The image size training uses (pipelines/training/train.yaml), so the bench covers it."""
    try:
        from pipelines.training.config import load_config

        return int(load_config().image_size)
    except Exception:  # the training package is optional for inference-only installs
        return DEFAULT_BENCH_SIZE


def _unique(items):
    return list(dict.fromkeys(items))


def calibrate_command(args) -> int:
    from pipelines.evaluation.calibration import Objective
    from pipelines.evaluation.line_reviews import LogSelection
    from pipelines.evaluation.recalibrate import recalibrate, recalibrate_from_log
    from pipelines.registry import configure_tracking

    source_options = ({"--split": args.split, "--out": args.out} if args.log else
                      {"--line": args.line, "--since": args.since, "--until": args.until})
    misplaced = [flag for flag, value in source_options.items() if value is not None]
    if misplaced:  # refused, not silently ignored
        return _fail(f"{', '.join(misplaced)} only appl{'ies' if len(misplaced) == 1 else 'y'} to "
                     f"--{'data' if args.log else 'log'}")
    try:
        objective = Objective.choose(max_escape_rate=args.max_escape_rate, max_overkill_rate=args.max_overkill_rate,
                                     escape_cost=args.escape_cost, default=Objective("max_escape_rate", 0.05))
        configure_tracking(args.tracking_uri)
        options = {"objective": objective, "min_defect_area_px": args.min_defect_area_px, "promote": args.promote,
                   "batch_size": args.batch_size}
        if args.log:
            result = recalibrate_from_log(args.model, LogSelection(args.log, args.line, args.since, args.until),
                                          **options)
        else:
            result = recalibrate(args.model, args.data, args.split or "val", report_dir=args.out, **options)
    except (ValueError, FileNotFoundError, LookupError) as exc:
        return _fail(str(exc))
    print(result.summary())
    if args.out:
        print(f"report: {args.out}")
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _positive_multiple_of_32(text: str) -> int:
    value = positive_int(text)
    try:
        return check_image_size(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value} is not a multiple of {INPUT_MULTIPLE}") from None


def _int_list(text: str) -> list[int]:
    return [positive_int(part) for part in text.split(",") if part.strip()]


def _size_list(text: str) -> list[int]:
    return [_positive_multiple_of_32(part) for part in text.split(",") if part.strip()]


def _str_list(text: str) -> list[str]:
    from jaffnet.inference import BACKENDS

    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
    return names


def _module_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
