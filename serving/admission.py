"""Admission control: how many model inputs an ingress replica keeps at the model at once.

Every input queued ahead of a frame adds about one forward to its latency on a CPU (a
batch of 8 costs about 8 forwards there), so an unbounded queue turns overload into
minutes-long answers that the line has long stopped waiting for. The ingress therefore
reserves a frame's inputs from the header, before decoding, and refuses the frame with
503 + Retry-After when the reservation would pass the budget: accepted frames keep close
to the unloaded latency, refused ones learn at once that they should retry. A frame that
alone needs more than the budget is still admitted when nothing else is in flight, so
large frames are slow under load, never impossible.
"""

from __future__ import annotations

import threading


class InputBudget:
    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"the input budget must be >= 1, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()  # reserved from the decode thread, released on the event loop

    @property
    def full(self) -> bool:
        return self.in_flight >= self.limit

    def fits(self, inputs: int) -> bool:
        """Whether ``inputs`` fit now (always, when nothing is in flight)."""
        return not self.in_flight or self.in_flight + inputs <= self.limit

    def reserve(self, inputs: int) -> bool:
        """Take ``inputs`` from the budget; False (nothing taken) if they do not fit."""
        with self._lock:
            if not self.fits(inputs):
                return False
            self.in_flight += inputs
            return True

    def release(self, inputs: int) -> None:
        with self._lock:
            self.in_flight -= inputs
