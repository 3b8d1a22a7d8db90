"""CLI: ``jaffnet serve``, ``jaffnet inspect``, ``jaffnet keys`` and ``jaffnet bench serve``."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import sys
import time
from pathlib import Path

from pipelines.cli_options import add_tracking_uri
from serving.config import DEFAULT_CONFIG_PATH


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {value}")
    return value


KEY_FILE_HELP = ("file holding the API key (default: $JAFFNET_API_KEY, else the file $JAFFNET_API_KEY_FILE names); "
                 "never the key itself on the command line")


def add_commands(subparsers, bench_subparsers) -> None:
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
    serve.add_argument("--keys", metavar="FILE", help="keys file (`jaffnet keys add`); without one the service "
                                                     "answers loopback clients only and --host must be loopback")
    serve.add_argument("--allowed-host", action="append", metavar="NAME",
                       help="a host name or address clients reach the service by (repeat; the Host header is "
                            "checked: DNS rebinding). Default: loopback names and --host")
    serve.add_argument("--decision-log", metavar="DIR", help="the decision log's folder (default: the config's "
                                                           "decision_log.folder, ./decision_log)")
    serve.add_argument("--keep-frames", choices=("none", "ng", "ng+sample", "all"),
                       help="which decisions keep their frame (default: the config's decision_log.frames, ng); "
                            "ng+sample also keeps OK frames near the threshold and a random sample of the others, "
                            "so operators can review OK decisions and escapes become visible")
    serve.add_argument("--expose-metrics", action="store_true",
                       help="let Ray's metrics export port listen on the network (default: loopback only)")
    serve.set_defaults(func=serve_command)

    keys = subparsers.add_parser("keys", help="API keys of the endpoint: add, list, revoke",
                                 description="Keys are shown once, at creation; the file keeps only their "
                                             "SHA-256. A running service re-reads the file within a second.")
    keys.set_defaults(func=lambda args: keys.print_help() or 2)
    actions = keys.add_subparsers(dest="keys_action", metavar="ACTION")
    add = actions.add_parser("add", help="create a key and print it (once) on stdout")
    add.add_argument("--file", required=True, help="keys file (created, mode 0600, if missing)")
    add.add_argument("--role", required=True, choices=("line", "operator", "admin"),
                     help="line: POST /v1/inspect for one line; operator: the page and every read; admin: all")
    add.add_argument("--line", help="the line a line key posts for (e.g. L1)")
    add.add_argument("--name", help="a name to recognise the key by (default: role and line)")
    add.set_defaults(func=keys_add_command)
    listing = actions.add_parser("list", help="the keys of a file (never their secrets)")
    listing.add_argument("--file", required=True)
    listing.add_argument("--json", action="store_true", help="one JSON object per key")
    listing.set_defaults(func=keys_list_command)
    revoke = actions.add_parser("revoke", help="revoke a key by its id (a running service stops taking it)")
    revoke.add_argument("--file", required=True)
    revoke.add_argument("key_id", metavar="ID", help="the key's id (jaffnet keys list)")
    revoke.set_defaults(func=keys_revoke_command)

    inspect = subparsers.add_parser("inspect", help="post images to a running endpoint and print the verdicts")
    inspect.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG, BMP or TIFF files")
    inspect.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL")
    inspect.add_argument("--threshold", type=_unit_interval, help="override the model's threshold")
    inspect.add_argument("--overlay-dir", help="write <name>_overlay.png files (defects in red) here")
    inspect.add_argument("--json", action="store_true", help="print each full response as one JSON line")
    inspect.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    inspect.add_argument("--key-file", help=KEY_FILE_HELP)
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


def application_settings(application: dict, args) -> dict:
    """The config's application args with the command line's overrides."""
    settings = dict(application.get("args") or {})
    for key, value in (("model_uri", args.model), ("tracking_uri", args.tracking_uri), ("backend", args.backend),
                       ("max_batch_size", args.max_batch_size)):
        if value is not None:
            settings[key] = value
    log_overrides = {key: value for key, value in (("folder", args.decision_log), ("frames", args.keep_frames))
                     if value is not None}
    if log_overrides:
        settings["decision_log"] = {**(settings.get("decision_log") or {}), **log_overrides}
    return settings


def serve_command(args) -> int:
    keep_ray_node_on_loopback(args.expose_metrics)
    from pydantic import ValidationError

    from serving.config import application_section, deployment_options, read_serve_config
    from serving.model_deployment import ModelLoadError

    try:
        config = read_serve_config(args.config)
        application = application_section(config)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = application_settings(application, args)
    http_options = http_options_for(config, args.host, args.port)
    try:
        settings["access"] = access_for(settings.get("access") or {}, http_options["host"], args.keys,
                                        args.allowed_host)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from ray import serve

    from pipelines.runtime import init_ray
    from serving.app import build_application
    from serving.keys import KeysFileError

    try:
        app = build_application(settings, deployment_options(application))
    except (ValidationError, ModelLoadError, KeysFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    init_ray(include_dashboard=False)
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


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def access_for(access: dict, host: str, keys_file: str | None, allowed_hosts: list[str] | None) -> dict:
    """The ``access`` settings ``jaffnet serve`` runs with; ``ValueError`` for a network bind without keys."""
    from serving.access import LOOPBACK_HOSTS

    access = dict(access)
    if keys_file:
        access["keys_file"] = keys_file
    if not access.get("keys_file") and not is_loopback_host(host):
        raise ValueError(f"refusing to listen on {host} without a keys file: anyone on the network could post "
                         f"frames and read every stored image. Create keys (jaffnet keys add --file keys --role "
                         f"line --line L1) and pass --keys keys (or access.keys_file in the config), or listen on "
                         f"127.0.0.1")
    if allowed_hosts:
        access["allowed_hosts"] = [*LOOPBACK_HOSTS, *allowed_hosts]
    elif "allowed_hosts" not in access and host not in ("0.0.0.0", "::") and not is_loopback_host(host):
        access["allowed_hosts"] = [*LOOPBACK_HOSTS, host]
    return access


# Ray 2.60's metrics export port listens on every interface unless the node's IP is loopback (its
# reporter agent), and ray.init(_node_ip_address="127.0.0.1") is turned back into the machine's IP. A
# local node takes 127.0.0.1 when this switch (meant for Windows and macOS, read when ray is first
# imported) says Ray cannot form a cluster. tests/serving/test_commands.py checks it still does.
LOOPBACK_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def keep_ray_node_on_loopback(expose_metrics: bool) -> None:
    """Before Ray is imported: a local Ray node (not one joining RAY_ADDRESS) on 127.0.0.1."""
    if expose_metrics or os.environ.get("RAY_ADDRESS"):
        return
    if "ray" in sys.modules:
        print("note: Ray was imported before jaffnet could keep its metrics port on loopback", file=sys.stderr)
        return
    os.environ.setdefault(LOOPBACK_NODE_ENV, "0")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def inspect_command(args) -> int:
    from serving.client import read_key, run

    try:
        key = read_key(args.key_file)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run(args.images, args.url, threshold=args.threshold, overlay_dir=args.overlay_dir, as_json=args.json,
               timeout=args.timeout, key=key)


def _keys_error(exc: Exception) -> int:
    print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
    return 2


def keys_add_command(args) -> int:
    from serving.keys import KeysFileError, add_key, key_id, new_keyset, read_keys_file, write_keys_file

    try:
        keyset = read_keys_file(args.file) if Path(args.file).exists() else new_keyset()
        token, keyset = add_key(keyset, args.role, args.line, args.name)
        write_keys_file(args.file, keyset)
    except (KeysFileError, ValueError, OSError) as exc:
        return _keys_error(exc)
    key = keyset.keys[key_id(token)]
    line = f", line {key.line}" if key.line else ""
    print(f"added key {key.id} ({key.role}{line}, name {key.name}) to {args.file}. The key follows on stdout, "
          f"shown this once: keep it in a file of mode 0600 on the client (JAFFNET_API_KEY_FILE).", file=sys.stderr)
    print(token)
    return 0


def keys_list_command(args) -> int:
    from serving.keys import KeysFileError, read_keys_file

    try:
        keys = read_keys_file(args.file).keys.values()
    except KeysFileError as exc:
        return _keys_error(exc)
    for key in keys:
        row = key.describe()
        print(json.dumps(row) if args.json else
              f"{row['id']}  {row['role']:<8}  {row['line'] or '-':<10}  {row['status']:<7}  {row['created']}  "
              f"{row['name']}")
    return 0


def keys_revoke_command(args) -> int:
    from serving.keys import KeysFileError, read_keys_file, revoke_key, write_keys_file

    try:
        write_keys_file(args.file, revoke_key(read_keys_file(args.file), args.key_id))
    except (KeysFileError, KeyError, OSError) as exc:
        return _keys_error(exc)
    print(f"revoked key {args.key_id} in {args.file}")
    return 0


def bench_command(args) -> int:
    keep_ray_node_on_loopback(False)
    from serving.bench import run

    return run(args)
