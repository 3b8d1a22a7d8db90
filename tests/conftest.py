import os
import socket
import time

import pytest
import torch

# Two cores here; keep torch from oversubscribing them alongside Ray workers.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def start_test_ray() -> None:
    """The suite's local Ray instance. More logical CPUs than the 2 cores: training workers
    holding every CPU would leave none for Ray Data, which then waits forever."""
    import ray

    # Ray Train's controller notices a finished worker group at its next health check (every 2 s by
    # default): at the suite's tiny sizes that wait is a tenth of a run. Set before Ray starts, so the
    # controllers (started by its workers) inherit it.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole suite (ray.init costs 4-7 s here)."""
    import ray

    start_test_ray()
    yield ray
    ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SERVE_URLS: dict[str, str] = {}  # Ray node id -> the URL of the Serve instance running on it


@pytest.fixture(scope="module")
def serve_url(ray_session):
    """The suite's Serve instance (controller and HTTP proxy on a free loopback port): started on first use
    and kept while Ray runs, because starting and shutting one down costs seconds per module here. A module
    deploys its own apps (its own names and route prefixes); they are deleted when the module ends. A Ray
    restart (the S3 tests) takes Serve with it, and the next module starts another."""
    from ray import serve

    node = ray_session.get_runtime_context().get_node_id()
    if node not in _SERVE_URLS:
        _SERVE_URLS.clear()
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        _SERVE_URLS[node] = f"http://127.0.0.1:{port}"
    try:
        yield _SERVE_URLS[node]
    finally:
        for name in list(serve.status().applications):
            serve.delete(name, _blocking=False)  # the apps' replicas stop side by side, not one after another
        deadline = time.monotonic() + 60
        while serve.status().applications and time.monotonic() < deadline:
            time.sleep(0.2)


def pytest_collection_modifyitems(config, items):
    """Tests that start Ray (and with it Serve, Train, Tune or Data) are integration tests,
    found from their fixtures so a new one cannot be forgotten: ``make test-quick`` skips them."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
