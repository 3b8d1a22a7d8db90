"""``jaffnet bench serve --attack``: hostile input, overload and a soak against a live service.

Loopback only and bounded (request counts and durations are capped), it runs four phases
against the application that ``serving.bench`` started, watching ``/healthz`` (every
0.25 s) and the Serve replicas (a new replica name = a restart) throughout:

1. **unloaded**: one client, back to back: the latency the others are compared with;
2. **capacity**: as many clients as the ingress admits frames at once
   (``max_inputs_in_flight`` / inputs per frame), closed loop: good frames per second;
3. **hostile**: the matrix of :mod:`serving.hostile` (plus slow bodies) cycled up to
   ``hostile_total`` by ``clients`` clients: every answer must be the case's 4xx;
4. **flood**: open loop at ``flood_factor`` x capacity: only 200 and 503, and the p99
   of the 200s within 2x the unloaded p99;
5. **unauthenticated flood** (when the service has keys): the same rate without a key:
   every answer 401, and no decision made (the model untouched);
6. **soak** (optional): the capacity clients for ``soak_s``: no errors at all.

Every request but the unauthenticated flood carries ``key`` (a line key) when one is given.

Each phase prints a row; the run fails (exit 1) when a target is missed.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np

from serving.hostile import HostileRequest, hostile_requests

HEALTH_PERIOD_S = 0.25
MAX_HOSTILE_REQUESTS = 10_000
MAX_FLOOD_S = 300.0
MAX_SOAK_S = 3600.0
MAX_CLIENTS = 64
SLOW_BODY_CLIENTS = 4
MAX_RETRY_AFTER_S = 2.0
UNAUTHENTICATED_FLOOD_S = 10.0


@dataclass
class Outcomes:
    """Statuses and latencies of one phase (or one hostile case)."""

    statuses: Counter = field(default_factory=Counter)
    latencies_s: dict[int, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, status: int | str, latency_s: float) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.latencies_s.setdefault(status, []).append(latency_s)

    def count(self) -> int:
        return sum(self.statuses.values())

    def percentile_ms(self, q: float, status: int | None = None) -> float:
        values = self.latencies_s.get(status, []) if status is not None else \
            [v for vs in self.latencies_s.values() for v in vs]
        return float(np.percentile(values, q) * 1000) if values else float("nan")

    def describe(self) -> str:
        return " ".join(f"{status}:{n}" for status, n in sorted(self.statuses.items(), key=lambda kv: str(kv[0])))


class Watch:
    """Polls ``/healthz`` and the Serve replica names in a thread while a phase runs."""

    def __init__(self, base: str, app_name: str):
        self.base, self.app_name = base, app_name
        self.health = Outcomes()
        self.replicas: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _replica_names(self) -> set[str]:
        import ray

        prefix = f"SERVE_REPLICA::{self.app_name}#"
        return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)}

    def _run(self) -> None:
        import requests

        with requests.Session() as session:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    status = session.get(self.base + "/healthz", timeout=5).status_code
                except requests.RequestException as exc:
                    status = type(exc).__name__
                self.health.add(status, time.perf_counter() - started)
                self.replicas |= self._replica_names()
                self._stop.wait(HEALTH_PERIOD_S)

    def __enter__(self) -> "Watch":
        self.replicas = self._replica_names()
        self._initial = set(self.replicas)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def restarts(self) -> int:
        return len(self.replicas - self._initial)

    @property
    def worst_health_ms(self) -> float:
        return self.health.percentile_ms(100)


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _post(session, url: str, body: bytes, content_type: str, params: dict | None = None,
          chunked: bool = False, timeout_s: float = 60.0, key: str | None = None) -> int | str:
    """The status, or the name of the exception when there was no answer."""
    import requests

    data = iter([body[i:i + 1 << 20] for i in range(0, len(body), 1 << 20)]) if chunked else body
    try:
        answer = session.post(url, data=data, params=params, headers={"Content-Type": content_type, **_auth(key)},
                              timeout=timeout_s)
    except requests.RequestException as exc:
        return type(exc).__name__
    if answer.status_code == 503:  # how long the service asked to wait, for clients that honour it
        _retry_after.wait_s = min(float(answer.headers.get("Retry-After", 1)), MAX_RETRY_AFTER_S)
    return answer.status_code


_retry_after = threading.local()  # per client thread: the last 503's Retry-After


def slow_body(base: str, body: bytes, seconds: float, timeout_s: float = 120.0, key: str | None = None) -> int | str:
    """POST ``body`` a few bytes at a time over ``seconds`` (a slowloris); the status back."""
    address = urlsplit(base)
    authorization = "".join(f"{name}: {value}\r\n" for name, value in _auth(key).items())
    with socket.create_connection((address.hostname, address.port), timeout=timeout_s) as connection:
        connection.sendall((f"POST /v1/inspect HTTP/1.1\r\nHost: {address.netloc}\r\n"
                            f"{authorization}Content-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n"
                            ).encode())
        deadline = time.monotonic() + seconds
        step = max(1, len(body) // max(1, int(seconds * 4)))
        sent = 0
        try:
            while sent < len(body) and time.monotonic() < deadline:
                connection.sendall(body[sent:sent + step])
                sent += step
                time.sleep(0.25)
        except OSError:  # the service answered and closed while we trickled: read its answer
            pass
        try:
            reply = connection.recv(4096)
        except OSError as exc:
            return type(exc).__name__
    try:
        return int(reply.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return "no_reply"


def closed_loop(url: str, body: bytes, clients: int, duration_s: float, max_requests: int = 1_000_000,
                key: str | None = None) -> Outcomes:
    """``clients`` back-to-back clients posting ``body`` until the time or request budget ends."""
    import requests

    outcomes, deadline = Outcomes(), time.perf_counter() + duration_s
    issued = iter(range(max_requests))
    lock = threading.Lock()

    def client() -> None:
        with requests.Session() as session:
            while time.perf_counter() < deadline:
                with lock:
                    if next(issued, None) is None:
                        return
                started = time.perf_counter()
                status = _post(session, url, body, "image/png", key=key)
                outcomes.add(status, time.perf_counter() - started)
                if status == 503:  # a line client waits as asked instead of hammering
                    time.sleep(_retry_after.wait_s)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: client(), range(clients)))
    return outcomes


def open_loop(url: str, body: bytes, rate_per_s: float, duration_s: float, key: str | None = None) -> Outcomes:
    """Requests started at ``rate_per_s`` whatever the answers (a line that does not wait)."""
    import requests

    outcomes = Outcomes()
    local = threading.local()

    def one() -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        started = time.perf_counter()
        outcomes.add(_post(local.session, url, body, "image/png", key=key), time.perf_counter() - started)

    interval, started = 1.0 / rate_per_s, time.perf_counter()
    with ThreadPoolExecutor(MAX_CLIENTS) as pool:
        sent = 0
        while (now := time.perf_counter()) - started < duration_s:
            due = started + sent * interval
            if due > now:
                time.sleep(due - now)
            pool.submit(one)
            sent += 1
    return outcomes


def hostile(base: str, cases: list[HostileRequest], total: int, clients: int,
            slow_seconds: float, key: str | None = None) -> dict[str, Outcomes]:
    """``total`` hostile requests cycling through ``cases``, ``clients`` at a time, with
    ``SLOW_BODY_CLIENTS`` slow bodies trickling alongside (counted in the total)."""
    import requests

    per_case = {case.name: Outcomes() for case in cases}
    slow_name = f"slow body ({slow_seconds:g} s)"
    per_case[slow_name] = Outcomes()
    slow_count = min(SLOW_BODY_CLIENTS, total)
    schedule = iter([cases[i % len(cases)] for i in range(total - slow_count)])
    lock = threading.Lock()
    url = base + "/v1/inspect"

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    case = next(schedule, None)
                if case is None:
                    return
                started = time.perf_counter()
                status = _post(session, url, case.body, case.content_type, case.params, case.chunked, key=key)
                per_case[case.name].add(status, time.perf_counter() - started)

    def slow() -> None:
        started = time.perf_counter()
        per_case[slow_name].add(slow_body(base, bytes(4096), slow_seconds, key=key),
                                time.perf_counter() - started)

    with ThreadPoolExecutor(clients + slow_count) as pool:
        futures = [pool.submit(slow) for _ in range(slow_count)] + [pool.submit(client) for _ in range(clients)]
        for future in futures:
            future.result()
    return per_case


@dataclass
class Target:
    name: str
    met: bool
    detail: str


def _row(name: str, outcomes: Outcomes, watch: Watch | None = None, status: int | None = None) -> str:
    health = f"{watch.worst_health_ms:>9.0f}{watch.restarts:>9}" if watch else f"{'':>18}"
    return (f"{name:<38}{outcomes.count():>7}{outcomes.percentile_ms(50, status):>9.0f}"
            f"{outcomes.percentile_ms(99, status):>9.0f}{health}  {outcomes.describe()}")


HEADER = f"{'phase / case':<38}{'sent':>7}{'p50 ms':>9}{'p99 ms':>9}{'health':>9}{'restarts':>9}  statuses"


def run_attack(base: str, app_name: str, body: bytes, max_body_bytes: int, upload_timeout_s: float,
               capacity_clients: int, clients: int = 8, hostile_total: int = 1000, flood_factor: float = 3.0,
               flood_s: float = 60.0, soak_s: float = 0.0, unloaded_s: float = 15.0,
               capacity_s: float = 20.0, key: str | None = None,
               decisions_made: Callable[[], int] | None = None) -> list[Target]:
    """The phases; prints a table and returns the targets with whether each was met. With
    ``key``, every request carries it and an unauthenticated flood follows the flood;
    ``decisions_made`` (the decision log's count) shows that flood decided nothing."""
    if not 1 <= clients <= MAX_CLIENTS or not 1 <= capacity_clients <= MAX_CLIENTS or \
            not 1 <= hostile_total <= MAX_HOSTILE_REQUESTS:
        raise ValueError(f"clients must be in [1, {MAX_CLIENTS}], hostile requests in [1, {MAX_HOSTILE_REQUESTS}]")
    if not 0 < flood_s <= MAX_FLOOD_S or not 0 <= soak_s <= MAX_SOAK_S:
        raise ValueError(f"flood must be in (0, {MAX_FLOOD_S}] s and soak in [0, {MAX_SOAK_S}] s")
    url = base + "/v1/inspect"
    closed_loop(url, body, capacity_clients, duration_s=3, key=key)  # warm-up
    print(HEADER, flush=True)
    targets: list[Target] = []

    with Watch(base, app_name) as watch:
        unloaded = closed_loop(url, body, 1, unloaded_s, key=key)
    print(_row("unloaded (1 client)", unloaded, watch, 200), flush=True)
    with Watch(base, app_name) as watch:
        loaded = closed_loop(url, body, capacity_clients, capacity_s, key=key)
    capacity = loaded.statuses[200] / capacity_s
    print(_row(f"capacity ({capacity_clients} clients): {capacity:.1f}/s", loaded, watch, 200), flush=True)

    with Watch(base, app_name) as watch:
        cases = hostile_requests(max_body_bytes)
        per_case = hostile(base, cases, hostile_total, clients, slow_seconds=upload_timeout_s + 5, key=key)
    # A line key may not override thresholds at all: such cases are refused (403) before their values are read.
    expected = {case.name: 403 if key and case.overrides_thresholds else case.expected for case in cases}
    wrong = 0
    for name, outcomes in per_case.items():
        print(_row("  " + name, outcomes), flush=True)
        want = expected.get(name, 408)
        wrong += sum(n for status, n in outcomes.statuses.items() if status != want)
    sent = sum(o.count() for o in per_case.values())
    print(_row(f"hostile ({sent} requests, {len(per_case)} cases)", Outcomes(), watch), flush=True)
    targets.append(Target("hostile: every answer the case's 4xx", wrong == 0, f"{wrong} of {sent} not"))
    targets.append(Target("hostile: no replica restarts", watch.restarts == 0, f"{watch.restarts}"))
    targets.append(Target("hostile: /healthz < 1 s throughout", watch.worst_health_ms < 1000 and
                          set(watch.health.statuses) == {200}, f"worst {watch.worst_health_ms:.0f} ms, "
                                                                 f"{watch.health.describe()}"))

    with Watch(base, app_name) as watch:
        flood = open_loop(url, body, flood_factor * capacity, flood_s, key=key)
    print(_row(f"flood {flood_factor:g}x capacity, {flood_s:g} s (200s)", flood, watch, 200), flush=True)
    ratio = flood.percentile_ms(99, 200) / unloaded.percentile_ms(99, 200)
    others = sum(n for status, n in flood.statuses.items() if status not in (200, 503))
    targets.append(Target("flood: only 200 and 503", others == 0 and flood.statuses[200] > 0,
                          flood.describe()))
    targets.append(Target("flood: p99 of the 200s <= 2x unloaded p99", ratio <= 2.0, f"{ratio:.2f}x"))
    targets.append(Target("flood: /healthz < 1 s, no restarts", watch.worst_health_ms < 1000 and not watch.restarts,
                          f"worst {watch.worst_health_ms:.0f} ms, {watch.restarts} restarts"))

    if key:
        targets += _unauthenticated_flood(base, app_name, url, body, flood_factor * capacity,
                                          min(flood_s, UNAUTHENTICATED_FLOOD_S), decisions_made)
    if soak_s:
        with Watch(base, app_name) as watch:
            soak = closed_loop(url, body, capacity_clients, soak_s, key=key)
        print(_row(f"soak {soak_s:g} s at capacity ({capacity_clients} clients)", soak, watch, 200), flush=True)
        errors = soak.count() - soak.statuses[200]
        targets.append(Target("soak: 0 errors, no restarts", errors == 0 and not watch.restarts,
                              f"{errors} errors in {soak.count()}, {watch.restarts} restarts"))
    for target in targets:
        print(f"{'PASS' if target.met else 'FAIL'}  {target.name}: {target.detail}", flush=True)
    return targets


def _unauthenticated_flood(base: str, app_name: str, url: str, body: bytes, rate_per_s: float, duration_s: float,
                           decisions_made: Callable[[], int] | None) -> list[Target]:
    before = decisions_made() if decisions_made else None
    with Watch(base, app_name) as watch:
        flood = open_loop(url, body, rate_per_s, duration_s)
    print(_row(f"flood without a key, {duration_s:g} s", flood, watch, 401), flush=True)
    targets = [Target("unauthenticated flood: every answer 401", set(flood.statuses) == {401}, flood.describe()),
               Target("unauthenticated flood: /healthz < 1 s, no restarts",
                      watch.worst_health_ms < 1000 and not watch.restarts,
                      f"worst {watch.worst_health_ms:.0f} ms, {watch.restarts} restarts")]
    if decisions_made:
        made = decisions_made() - before
        targets.append(Target("unauthenticated flood: no decision made (model untouched)", made == 0,
                              f"{made} decisions logged during it"))
    return targets
