"""``jaffnet bench serve``: the HTTP service against the raw batched forward, same run, same machine.

Starts the application on 127.0.0.1 with one model replica, drives ``/v1/inspect`` with
a bounded number of concurrent clients for a bounded time (and request count), then
times the predictor alone on the same tiles at batch 1 and at ``max_batch_size``, with
as many threads as the replica has CPUs. The figure we track is service frames/s over
the better raw frames/s.

The service runs with keys, as in production: a keys file of its own with a line key (the
load) and an admin key (the model card). The per-key request limit is lifted, so the
figures measure the service and its admission control, not the limit.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.config import application_section, deployment_options, read_serve_config
from jaffnet.contract import InputContract
from jaffnet.frames import plan_frame
from pipelines.codec import encode_png

MAX_CONCURRENCY = 64
APP_NAME = "jaffnet-bench"
MAX_DURATION_S = 300.0
BENCH_LINE = "bench"
UNLIMITED_REQUESTS_PER_S = 100_000


@dataclass
class LoadResult:
    latencies_s: list[float]
    errors: int
    elapsed_s: float

    @property
    def throughput(self) -> float:
        return len(self.latencies_s) / self.elapsed_s if self.elapsed_s else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")


def drive(url: str, body: bytes, concurrency: int, duration_s: float, max_requests: int,
          key: str | None = None) -> LoadResult:
    """``concurrency`` clients posting ``body`` back to back until the time or request budget
    runs out (``serving.attack.closed_loop``); anything but a 200 counts as an error."""
    from serving.attack import closed_loop

    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be in [1, {MAX_CONCURRENCY}], got {concurrency}")
    if not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration must be in (0, {MAX_DURATION_S}] s, got {duration_s}")
    started = time.perf_counter()
    outcomes = closed_loop(url, body, concurrency, duration_s, max_requests, key=key)
    ok = outcomes.latencies_s.get(200, [])
    return LoadResult(ok, outcomes.count() - len(ok), time.perf_counter() - started)


def raw_forward_rate(predictor, inputs: list[np.ndarray], normalization: str, batch_size: int,
                     duration_s: float) -> float:
    """Model inputs per second through ``predictor`` on full batches (after one warm-up batch)."""
    from jaffnet.frames import model_inputs

    reps = -(-batch_size // len(inputs))
    batch = model_inputs((inputs * reps)[:batch_size], normalization)
    predictor(batch)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < duration_s or done == 0:
        predictor(batch)
        done += batch_size
    return done / (time.perf_counter() - started)


def _random_model_dir(width: float, contract: InputContract, directory: Path) -> str:
    from jaffnet import JAFFNet
    from jaffnet.io import save_pretrained

    return str(save_pretrained(JAFFNet(width=width), directory / "model",
                               metadata={"input_contract": contract.to_dict(),
                                         "threshold": 0.5, "model_name": "random"}))


@dataclass
class BenchKeys:
    file: str
    line: str  # the load's key
    admin: str  # reads the model card


def bench_keys(directory: Path) -> BenchKeys:
    from serving.keys import add_key, new_keyset, write_keys_file

    line, keyset = add_key(new_keyset(), "line", BENCH_LINE)
    admin, keyset = add_key(keyset, "admin", None)
    write_keys_file(directory / "keys", keyset)
    return BenchKeys(str(directory / "keys"), line, admin)


def run(args) -> int:
    from ray import serve

    from pipelines.runtime import init_ray
    from serving.app import build_application

    application = application_section(read_serve_config(args.config))
    settings = dict(application.get("args") or {})
    options = deployment_options(application)
    model_options = options.setdefault("ModelDeployment", {})
    # One model replica, so the ratio compares the service with one forward loop.
    model_options.pop("autoscaling_config", None)
    model_options["num_replicas"] = 1
    replica_cpus = float(model_options.get("ray_actor_options", {}).get("num_cpus", 1))
    for key in ("backend", "max_batch_size", "batch_wait_timeout_s", "max_inputs_in_flight"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    model_options["max_ongoing_requests"] = max(int(model_options.get("max_ongoing_requests", 0)),
                                                 2 * int(settings.get("max_batch_size", 8)))
    if not args.attack and args.max_inputs_in_flight is None:
        # The throughput comparison wants every client's frame at the model (batches), not refused.
        settings["max_inputs_in_flight"] = min(4096, args.concurrency * int(settings.get("max_inputs_per_frame", 256)))

    with tempfile.TemporaryDirectory() as tmp:
        contract = InputContract(args.image_size, mode=args.input_mode)
        settings["model_uri"] = args.model or _random_model_dir(args.random_width, contract, Path(tmp))
        if (settings.get("decision_log") or {}).get("folder"):  # logged as configured, but not into the cwd
            settings["decision_log"] = {**settings["decision_log"], "folder": str(Path(tmp) / "decision_log")}
        keys = bench_keys(Path(tmp))
        settings["access"] = {**(settings.get("access") or {}), "keys_file": keys.file,
                              "requests_per_s": UNLIMITED_REQUESTS_PER_S}
        init_ray(include_dashboard=False, log_to_driver=False, configure_logging=False)
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        try:
            serve.run(build_application(settings, options), name=APP_NAME, route_prefix="/")
            return _attack(args, settings, keys) if args.attack else _measure(args, settings, replica_cpus, keys)
        finally:
            serve.shutdown()


def _test_frame(args, size: int) -> tuple[np.ndarray, bytes]:
    height, width = args.frame_height or size, args.frame_width or size
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return frame, encode_png(frame)


def _attack(args, settings: dict, keys: BenchKeys) -> int:
    from jaffnet.inference.bench import cpu_name
    from serving.attack import run_attack
    from serving.config import ServingConfig
    from pipelines.decision_records import DecisionReader

    base = f"http://127.0.0.1:{args.port}"
    card = requests_json(base + "/v1/model", keys.admin)
    frame, body = _test_frame(args, card["image_size"])
    config = ServingConfig(**settings)
    print(f"jaffnet bench serve --attack: model {card['name']}/{card['version']} ({card['backend']}, "
          f"{card['device']}), {card['contract']['mode']} {card['image_size']}px, frame "
          f"{frame.shape[1]}x{frame.shape[0]} ({len(body)} bytes), "
          f"{cpu_name()}, {os.cpu_count()} cores",
          flush=True)
    inputs = len(plan_frame(InputContract.from_dict(card["contract"]), *frame.shape[:2]))
    log = DecisionReader(config.decision_log.folder) if config.decision_log.folder else None
    targets = run_attack(base, APP_NAME, body, config.max_body_bytes, config.upload_timeout_s,
                         capacity_clients=max(1, config.max_inputs_in_flight // inputs), clients=args.concurrency,
                         hostile_total=args.hostile_requests, flood_s=args.flood_s, soak_s=args.soak_s,
                         key=keys.line, decisions_made=(lambda: log.total() if log.exists() else 0) if log else None)
    return 0 if all(t.met for t in targets) else 1


def requests_json(url: str, key: str) -> dict:
    import requests

    answer = requests.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    answer.raise_for_status()
    return answer.json()


def _measure(args, settings: dict, replica_cpus: float, keys: BenchKeys) -> int:
    import torch

    from jaffnet.inference import build_predictor
    from pipelines.registry import load_model

    base = f"http://127.0.0.1:{args.port}"
    card = requests_json(base + "/v1/model", keys.admin)
    size = card["image_size"]
    frame, body = _test_frame(args, size)
    height, width = frame.shape[:2]
    contract = InputContract.from_dict(card["contract"])
    plan = plan_frame(contract, height, width)

    drive(base + "/v1/inspect", body, concurrency=min(args.concurrency, 4), duration_s=2, max_requests=8,
          key=keys.line)  # warm-up
    load = drive(base + "/v1/inspect", body, args.concurrency, args.duration, args.max_requests, key=keys.line)

    torch.set_num_threads(max(1, int(replica_cpus)))  # what the replica gets (Ray sets OMP_NUM_THREADS)
    model = load_model(settings["model_uri"]).model
    predictor = build_predictor(model, backend=card["backend"], **(
        {"image_size": size} if card["backend"] == "onnx" else {}))
    batch_size = int(settings.get("max_batch_size", 8))
    inputs = plan.split(frame)
    # Batch 1 too: on a CPU a full batch can be slower per tile (cache), and the service
    # then forms small batches; the ratio is taken against the faster of the two.
    raw_frames = {batch: raw_forward_rate(predictor, inputs, contract.normalization, batch,
                                          duration_s=min(args.duration, 10)) / len(plan)
                  for batch in sorted({1, batch_size})}

    print(f"jaffnet bench serve: model {card['name']}/{card['version']} ({card['backend']}, {card['device']}), "
          f"frame {width}x{height} = {len(plan)} input(s) of {size}px, max_batch_size {batch_size}, "
          f"{args.concurrency} clients for {load.elapsed_s:.1f} s, torch threads {torch.get_num_threads()}")
    print(f"{'':<28}{'frames/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'requests':>10}{'errors':>8}")
    print(f"{'HTTP service':<28}{load.throughput:>10.2f}{load.percentile_ms(50):>10.1f}"
          f"{load.percentile_ms(95):>10.1f}{load.percentile_ms(99):>10.1f}{len(load.latencies_s):>10}{load.errors:>8}")
    for batch, rate in raw_frames.items():
        print(f"{'raw forward, batch ' + str(batch):<28}{rate:>10.2f}")
    best = max(raw_frames.values())
    print(f"service / best raw forward throughput: {load.throughput / best if best else float('nan'):.3f}")
    return 0 if load.latencies_s and not load.errors else 1
