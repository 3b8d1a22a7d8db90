"""The decision log: every ``/v1/inspect`` decision, durable in SQLite.

One writer thread owns the only writing connection (WAL, ``synchronous=FULL``): requests
hand it a :class:`PendingDecision` through a bounded queue and never touch the disk
themselves. The writer commits whatever is queued in one transaction (group commit), then
applies the retention limits (count, age, bytes; oldest dropped first). A request may wait
a bounded time for its commit, so a reply can say truthfully whether its decision is on
disk. Any store failure (full disk, broken file, full queue) makes the decision
"not logged", counted and logged, and never fails the inspection.

The records' schema and read side (readers open their own read-only connections, which with
WAL never block the writer) are in :mod:`pipelines.decision_records`.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipelines.decision_records import (_SCHEMA, database_path, open_store, png_bytes,
                                        valid_request_id)

logger = logging.getLogger("ray.serve")


class DecisionLogSettings(BaseModel):
    """The ``decision_log:`` section of the serving config."""

    model_config = ConfigDict(extra="forbid")

    folder: str | None = Field(None, description="where decisions.sqlite lives; null: no decision log")
    frames: Literal["none", "ng", "ng+sample", "all"] = Field(
        "ng", description="which decisions keep their frame and mask; ng+sample: every NG, the OK frames near the "
                          "threshold and a random ok_sample_rate of the other OK frames (so escapes can be seen)")
    ok_sample_rate: float = Field(0.02, gt=0, le=1, description="ng+sample: the fraction of other OK frames kept")
    near_threshold_log_odds: float = Field(
        2.0, ge=0, le=20, description="ng+sample: OK frames whose image score is within this many log-odds below "
                                      "image_threshold are kept (2: odds within a factor e^2 = 7.4 of the cut's)")
    max_records: int = Field(100_000, ge=1, le=100_000_000)
    max_age_days: float = Field(30.0, gt=0, le=3650)
    max_bytes: int = Field(2 * 1024**3, ge=1024 * 1024, description="stored records and frames, oldest dropped")
    queue_size: int = Field(256, ge=1, le=65536, description="decisions waiting for the writer; beyond: not logged")
    wait_for_commit_s: float = Field(2.0, ge=0, le=60, description="how long a reply waits for its record's "
                                                                  "commit (0: reply 'queued' at once)")
    # The audit log (serving.audit_log) lives beside it, kept max_age_days too; it has a row per request.
    audit_max_records: int = Field(1_000_000, ge=1000, le=1_000_000_000, description="audit rows kept")


class NotLogged(Exception):
    """Why a decision is not in the log: ``kind`` for metrics (few values), the message for the reply."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class PendingDecision:
    """One decision on its way to the writer. ``pixels``/``mask`` only when its frame is kept."""

    reply: dict[str, Any]
    ts: float
    pixels: np.ndarray | None = None  # the decoded 8-bit frame the model judged (grey or RGB)
    mask: np.ndarray | None = None  # HxW bool: pixels at or above the pixel threshold

    @property
    def request_id(self) -> str:
        return self.reply["request_id"]


class StoreObserver:
    """What the store reports (the ingress plugs Prometheus metrics in; tests count)."""

    def written(self, count: int) -> None: ...

    def not_logged(self, kind: str) -> None: ...

    def queue_depth(self, depth: int) -> None: ...


def _log_odds(probability: float) -> float:
    p = min(max(probability, 1e-12), 1 - 1e-12)  # scores of exactly 0 or 1 stay finite
    return math.log(p / (1 - p))


def retention(settings: DecisionLogSettings, reply: dict[str, Any], draw: Callable[[], float]) -> dict | None:
    """Why a decision keeps its frame and the probability it had of being kept (``{"reason",
    "sample_rate"}``), or None. ``draw``: a uniform [0, 1) number, for the random OK sample.
    The rate is what lets line quality count a sampled OK frame for 1/rate frames."""
    frames, decision = settings.frames, reply["decision"]
    if frames == "all":
        return {"reason": "all", "sample_rate": 1.0}
    if decision == "NG" and frames in ("ng", "ng+sample"):
        return {"reason": "ng", "sample_rate": 1.0}
    if decision == "NG" or frames != "ng+sample":
        return None
    # An OK close to the cut (or over it but below min_defect_area_px) is where escapes hide: keep them all.
    # Close in log-odds, not in score: calibrated cuts range from 1e-4 to 0.9, and a fixed score margin
    # would keep every OK frame under a low cut (and too few under a high one).
    if _log_odds(reply["image_score"]) >= _log_odds(reply["image_threshold"]) - settings.near_threshold_log_odds:
        return {"reason": "near_threshold", "sample_rate": 1.0}
    if draw() < settings.ok_sample_rate:
        return {"reason": "sample", "sample_rate": settings.ok_sample_rate}
    return None


class DecisionLog:
    """The writer side: ``submit`` from any thread, one writer thread commits."""

    def __init__(self, settings: DecisionLogSettings, observer: StoreObserver | None = None,
                 clock: Callable[[], float] = time.time):
        if settings.folder is None:
            raise ValueError("the decision log needs a folder")
        self.settings = settings
        self.path = database_path(settings.folder)
        self.observer = observer or StoreObserver()
        self.clock = clock
        self._queue: queue.Queue[tuple[PendingDecision, Future] | None] = queue.Queue(settings.queue_size)
        self._connection: sqlite3.Connection | None = None
        self._count = 0
        self._bytes = 0
        self._thread = threading.Thread(target=self._run, name="decision-log-writer", daemon=True)
        self._thread.start()

    # -- request side -------------------------------------------------------------------------
    def submit(self, pending: PendingDecision) -> Future:
        """Queue one decision; the future ends with its ``seq`` once committed, or ``NotLogged``."""
        future: Future = Future()
        if not valid_request_id(pending.request_id):
            self._refuse(future, NotLogged("bad_request_id", "the request id is not one the log can store"))
        else:
            try:
                self._queue.put_nowait((pending, future))
            except queue.Full:
                self._refuse(future, NotLogged("queue_full", "the decision log queue is full"))
        self.observer.queue_depth(self._queue.qsize())
        return future

    def _refuse(self, future: Future, refusal: NotLogged) -> None:
        future.set_running_or_notify_cancel()
        future.set_exception(refusal)
        self.observer.not_logged(refusal.kind)
        logger.warning("decision not logged: %s", refusal)

    def close(self, timeout_s: float = 10.0) -> None:
        """Commit what is queued, then stop the writer."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout_s)

    # -- writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item]
            while item is not None and len(batch) < 64:  # group commit: whatever else waits
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
            stopping = batch[-1] is None
            entries = [entry for entry in batch if entry is not None]
            try:
                self._write(entries)
            except Exception:  # a bug, not the store: fail these, keep the writer alive
                logger.exception("decision log writer failed")
                for _, future in entries:
                    if not future.done():
                        future.set_exception(NotLogged("writer_failed", "the decision log writer failed"))
            self.observer.queue_depth(self._queue.qsize())
            if stopping:
                if self._connection is not None:
                    self._connection.close()
                return

    def _write(self, batch: list[tuple[PendingDecision, Future]]) -> None:
        taken = [(pending, future) for pending, future in batch if future.set_running_or_notify_cancel()]
        if not taken:
            return
        try:
            rows = [(pending, future, self._encode(pending)) for pending, future in taken]
            connection = self._connect()
            results = []
            with connection:  # one transaction: commit, or roll back every row
                for pending, future, row in rows:
                    results.append((future, self._insert(connection, pending, row)))
                self._apply_retention(connection)
        except Exception as exc:  # full disk, unwritable folder, corrupt file: degrade, never raise
            self._reset_after_failure()
            # The cause (it may name server paths) goes to the service log, not to clients.
            reason = "the decision log store failed (the service log has the cause)"
            for _, future in taken:
                future.set_exception(NotLogged("store_failed", reason))
                self.observer.not_logged("store_failed")
            logger.error("decision log: %d decision(s) not logged: the store failed: %s: %s", len(taken),
                         type(exc).__name__, exc)
            return
        written = 0
        for future, outcome in results:
            if isinstance(outcome, NotLogged):
                future.set_exception(outcome)
                self.observer.not_logged(outcome.kind)
            else:
                written += 1
                future.set_result(outcome)
        self.observer.written(written)
        self._incremental_vacuum()

    def _encode(self, pending: PendingDecision) -> tuple[str, bytes | None, bytes | None]:
        reply = json.dumps(pending.reply, separators=(",", ":"))
        if pending.pixels is None:
            return reply, None, None
        return reply, png_bytes(pending.pixels), png_bytes(pending.mask)

    def _insert(self, connection: sqlite3.Connection, pending: PendingDecision,
                row: tuple[str, bytes | None, bytes | None]) -> int | NotLogged:
        reply_json, frame_png, mask_png = row
        reply, model = pending.reply, pending.reply["model"]
        size = len(reply_json) + len(frame_png or b"") + len(mask_png or b"")
        try:
            cursor = connection.execute(
                "INSERT INTO decisions (request_id, ts, line, station, part_id, model_name, model_version, "
                "model_run_id, decision, image_score, reply, has_frame, bytes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (pending.request_id, pending.ts, reply.get("line"), reply.get("station"), reply.get("part_id"),
                 model["name"], str(model["version"]), model.get("run_id"), reply["decision"],
                 float(reply["image_score"]), reply_json, frame_png is not None, size))
        except sqlite3.IntegrityError:  # only this statement is undone; the batch goes on
            return NotLogged("duplicate_request_id", f"request id {pending.request_id} is already in the log")
        seq = cursor.lastrowid
        if frame_png is not None:
            connection.execute("INSERT INTO frames (seq, frame_png, mask_png) VALUES (?,?,?)",
                               (seq, frame_png, mask_png))
        self._count += 1
        self._bytes += size
        return seq

    def _apply_retention(self, connection: sqlite3.Connection) -> None:
        """Drop the oldest records beyond the age, count and byte limits."""
        settings = self.settings
        cutoff = self.clock() - settings.max_age_days * 86400
        expired = connection.execute("SELECT MAX(seq) FROM decisions WHERE ts < ?", (cutoff,)).fetchone()[0]
        if expired is not None:
            self._drop_through(connection, expired)
        if self._count > settings.max_records:
            (last,) = connection.execute("SELECT seq FROM decisions ORDER BY seq LIMIT 1 OFFSET ?",
                                         (self._count - settings.max_records - 1,)).fetchone()
            self._drop_through(connection, last)
        excess = self._bytes - settings.max_bytes
        if excess > 0:
            freed, last = 0, None
            for seq, size in connection.execute("SELECT seq, bytes FROM decisions ORDER BY seq"):
                freed, last = freed + size, seq
                if freed >= excess:
                    break
            self._drop_through(connection, last)

    def _drop_through(self, connection: sqlite3.Connection, seq: int) -> None:
        count, size = connection.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM decisions WHERE seq <= ?",
                                         (seq,)).fetchone()
        connection.execute("DELETE FROM frames WHERE seq <= ?", (seq,))
        connection.execute("DELETE FROM reviews WHERE seq <= ?", (seq,))
        connection.execute("DELETE FROM decisions WHERE seq <= ?", (seq,))
        self._count -= count
        self._bytes -= size

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = open_store(self.path, _SCHEMA, "FULL")  # a committed decision survives power loss
            try:
                self._count, self._bytes = connection.execute(
                    "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM decisions").fetchone()
            except Exception:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _reset_after_failure(self) -> None:
        """Reopen on the next batch: the running totals are re-read from what is on disk."""
        if self._connection is not None:
            try:
                self._connection.close()
            except sqlite3.Error:
                pass
        self._connection = None

    def _incremental_vacuum(self) -> None:
        try:
            self._connection.execute("PRAGMA incremental_vacuum(256)")  # give freed pages back to the disk
        except sqlite3.Error:
            pass


