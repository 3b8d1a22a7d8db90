"""CLI: ``jaffnet serve``, ``jaffnet inspect`` and ``jaffnet bench serve``."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from pipelines.cli_options import add_tracking_uri
from serving.config import DEFAULT_CONFIG_PATH


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {value}")
    return value


def add_commands(subparsers, bench_subparsers) -> None:
    if "evaluate" in subparsers.choices:  # `jaffnet evaluate --endpoint URL`: the site acceptance test
        subparsers.choices["evaluate"].set_defaults(evaluate_endpoint=_evaluate_endpoint)
    serve = subparsers.add_parser(
        "serve", help="run the Ray Serve inspection endpoint (POST /v1/inspect)",
        description="Deploys the application of a Serve config YAML (default: the packaged "
                    "serving/serve_config.yaml, also usable with `serve run` / `serve deploy`) with the "
                    "overrides below, and blocks until Ctrl-C.")
    serve.add_argument("--model", help="registry URI or saved-model directory (default from the config: "
                                       "models:/jaffnet@champion)")
    serve.add_argument("--host", help="listen address (default: the config's http_options, 127.0.0.1; "
                                      "0.0.0.0 for the network)")
    serve.add_argument("--port", type=int, help="listen port (default: the config's http_options, 8000)")
    serve.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="Serve config YAML")
    add_tracking_uri(serve)
    serve.add_argument("--backend", help="inference backend (eager, fused, compile, onnx, cuda-fp16, ...)")
    serve.add_argument("--max-batch-size", type=int, help="tiles per batched forward")
    serve.set_defaults(func=serve_command)

    inspect = subparsers.add_parser("inspect", help="post images to a running endpoint and print the verdicts")
    inspect.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG, BMP or TIFF files")
    inspect.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL")
    inspect.add_argument("--threshold", type=_unit_interval, help="override the model's threshold")
    inspect.add_argument("--overlay-dir", help="write <name>_overlay.png files (defects in red) here")
    inspect.add_argument("--json", action="store_true", help="print each full response as one JSON line")
    inspect.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    inspect.set_defaults(func=inspect_command)

    bench = bench_subparsers.add_parser(
        "serve", help="HTTP throughput and p50/p95/p99 latency next to the raw batched forward",
        description="Starts the service on 127.0.0.1 (one model replica), drives it with bounded concurrent "
                    "clients for a bounded time, then times the raw batched forward in the same run.")
    bench.add_argument("--model", help="registry URI or saved-model directory (default: random weights)")
    bench.add_argument("--random-width", type=float, default=0.25, help="width of the random-weights model")
    bench.add_argument("--image-size", type=int, default=256, help="input size of the random-weights model")
    bench.add_argument("--input-mode", choices=("resize", "tile"), default="resize",
                       help="input contract of the random-weights model")
    bench.add_argument("--frame-height", type=int, help="posted frame height (default: the model input)")
    bench.add_argument("--frame-width", type=int, help="posted frame width (default: the model input)")
    bench.add_argument("--concurrency", type=int, default=8, help="concurrent clients (at most 64)")
    bench.add_argument("--duration", type=float, default=20.0, help="seconds of load (at most 300)")
    bench.add_argument("--max-requests", type=int, default=2000, help="stop after this many requests")
    bench.add_argument("--port", type=int, default=8011)
    bench.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="Serve config YAML")
    bench.add_argument("--backend", help="inference backend (default from the config)")
    bench.add_argument("--max-batch-size", type=int)
    bench.add_argument("--batch-wait-timeout-s", type=float)
    bench.add_argument("--max-inputs-in-flight", type=int, help="the ingress's input budget (admission)")
    bench.add_argument("--attack", action="store_true",
                       help="instead of the throughput comparison: unloaded and capacity latency, the hostile "
                            "matrix, a flood at 3x capacity and (--soak-s) a soak, watching /healthz and replica "
                            "restarts (serving.attack); exit 1 if a target is missed")
    bench.add_argument("--hostile-requests", type=int, default=1000, help="--attack: hostile requests to send")
    bench.add_argument("--flood-s", type=float, default=60.0, help="--attack: seconds of flood at 3x capacity")
    bench.add_argument("--soak-s", type=float, default=0.0, help="--attack: seconds of soak at capacity (0: none)")
    bench.set_defaults(func=bench_command)


def serve_command(args) -> int:
    from pydantic import ValidationError

    from serving.config import application_section, deployment_options, read_serve_config
    from serving.model_deployment import ModelLoadError

    try:
        config = read_serve_config(args.config)
        application = application_section(config)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = dict(application.get("args") or {})
    for key, value in (("model_uri", args.model), ("tracking_uri", args.tracking_uri), ("backend", args.backend),
                       ("max_batch_size", args.max_batch_size)):
        if value is not None:
            settings[key] = value

    from ray import serve

    from pipelines.runtime import init_ray
    from serving.app import build_application

    try:
        app = build_application(settings, deployment_options(application))
    except (ValidationError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    init_ray(include_dashboard=False)
    http_options = http_options_for(config, args.host, args.port)
    serve.start(http_options=http_options)
    name = application.get("name", "jaffnet")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill`/`docker stop` shut Serve down like Ctrl-C
    try:
        serve.run(app, name=name, route_prefix=application.get("route_prefix", "/"))
        print(f"serving on http://{http_options['host']}:{http_options['port']}/v1/inspect (Ctrl-C to stop)",
              flush=True)
        while True:
            time.sleep(60)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:  # a replica failed to start (e.g. the model cannot be loaded)
        print(f"error: the deployment failed: {exc}", file=sys.stderr)
        return 1
    finally:
        serve.shutdown()
    return 0


def http_options_for(config: dict, host: str | None, port: int | None) -> dict:
    """The Serve config's ``http_options`` (what ``serve run`` applies), with --host/--port on top."""
    options = {"host": "127.0.0.1", "port": 8000, **(config.get("http_options") or {})}
    options.update({key: value for key, value in (("host", host), ("port", port)) if value is not None})
    return options


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def inspect_command(args) -> int:
    from serving.client import run

    return run(args.images, args.url, threshold=args.threshold, overlay_dir=args.overlay_dir, as_json=args.json,
               timeout=args.timeout)


def bench_command(args) -> int:
    from serving.bench import run

    return run(args)


def _evaluate_endpoint(url: str, dataset_dir: str, split: str, *, concurrency: int):
    from serving.acceptance import evaluate_endpoint

    return evaluate_endpoint(url, dataset_dir, split, concurrency=concurrency)
