import os

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

    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole suite (ray.init costs 4-7 s here)."""
    import ray

    start_test_ray()
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    """Tests that start Ray (and with it Serve, Train, Tune or Data) are integration tests,
    found from their fixtures so a new one cannot be forgotten: ``make test-quick`` skips them."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
