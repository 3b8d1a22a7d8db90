"""How much memory the Ray processes of a training run hold, epoch by epoch.

``RayMemoryProbe`` is a Ray Train callback (it runs in the Train controller, on the head
node): after every report it sums the resident memory of this node's Ray processes
(workers ``ray::...``, raylet, GCS, dashboard) and counts Ray Data ``SplitCoordinator``
actors, appending one JSON line per epoch to a file the driver reads back. Resident sizes
count shared object-store pages in every process that maps them, so the sum is for
comparing epochs of one run, not an absolute footprint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

try:
    from ray.train import UserCallback
except ImportError:  # pragma: no cover - Ray Train V1
    UserCallback = object

_RAY_DAEMONS = ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env")


def ray_processes_memory() -> tuple[float, int]:
    """(summed RSS of this node's Ray processes in MB, SplitCoordinator actors alive)."""
    rss, coordinators = 0, 0
    for process in psutil.process_iter(["cmdline", "memory_info"]):
        command = " ".join(process.info["cmdline"] or [])
        if not command.startswith("ray::") and not any(name in command for name in _RAY_DAEMONS):
            continue
        rss += process.info["memory_info"].rss if process.info["memory_info"] else 0
        coordinators += "SplitCoordinator" in command
    return rss / 2**20, coordinators


@dataclass(frozen=True)
class MemorySample:
    epoch: int
    ray_rss_mb: float
    split_coordinators: int
    epoch_time_s: float


class RayMemoryProbe(UserCallback):
    def __init__(self, path: str | Path):
        self.path = str(path)

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        if not metrics or not metrics[0]:
            return
        rss_mb, coordinators = ray_processes_memory()
        sample = MemorySample(int(metrics[0]["epoch"]), rss_mb, coordinators, float(metrics[0]["epoch_time_s"]))
        with open(self.path, "a") as handle:
            handle.write(json.dumps(sample.__dict__) + "\n")

    def samples(self) -> list[MemorySample]:
        if not Path(self.path).is_file():
            return []
        return [MemorySample(**json.loads(line)) for line in Path(self.path).read_text().splitlines() if line]
