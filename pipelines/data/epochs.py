"""Which epoch a run's training dataset is drawing its augmentation for.

Ray Train keeps one ``SplitCoordinator`` actor (~250 MB) per dataset handed to a trainer,
for the whole run, so a run uses ONE training dataset, re-executed every epoch. Its
augmentation UDF asks this clock for the epoch, so every epoch is a fresh draw that is
still a function of ``(seed, epoch, sample id)``, whichever worker or task handles it.
Every training rank sets the clock before iterating an epoch, and Ray Data's streaming
split starts executing an epoch only after every rank has asked for it, so no batch of
epoch ``e`` is drawn while the clock still says ``e - 1``.
"""

from __future__ import annotations

import ray

NAMESPACE = "jaffnet"
_HELD: dict[str, object] = {}  # the creating process keeps each clock alive for its lifetime
_HANDLES: dict[str, object] = {}  # per process: looked up once


@ray.remote(num_cpus=0)
class EpochClock:
    def __init__(self) -> None:
        self._epoch = 0

    def set(self, epoch: int) -> None:
        self._epoch = int(epoch)

    def get(self) -> int:
        return self._epoch


def clock_name(run_name: str) -> str:
    return f"epoch-clock-{run_name}"


def start_epoch_clock(name: str) -> str:
    """Create the named clock once per process (a resumed run reuses it); returns its name
    for the UDF and the loop. Only the creating handle keeps the actor alive: it is held."""
    if name not in _HELD:
        _HELD[name] = EpochClock.options(name=name, namespace=NAMESPACE, get_if_exists=True).remote()
    return name


def _clock(name: str):
    if name not in _HANDLES:
        _HANDLES[name] = ray.get_actor(name, namespace=NAMESPACE)
    return _HANDLES[name]


def set_epoch(name: str, epoch: int) -> None:
    ray.get(_clock(name).set.remote(epoch))


def current_epoch(epoch: int | str) -> int:
    """``epoch`` itself, or the epoch the clock named ``epoch`` shows."""
    if isinstance(epoch, str):
        return int(ray.get(_clock(epoch).get.remote()))
    return int(epoch)
