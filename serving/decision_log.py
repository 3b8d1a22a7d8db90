"""The decision log: every ``/v1/inspect`` decision, durable in SQLite.

One writer thread owns the only writing connection (WAL, ``synchronous=FULL``): requests
hand it a :class:`PendingDecision` through a bounded queue and never touch the disk
themselves. The writer commits whatever is queued in one transaction (group commit), then
applies the retention limits (count, age, bytes; oldest dropped first). A request may wait
a bounded time for its commit, so a reply can say truthfully whether its decision is on
disk. Any store failure (full disk, broken file, full queue) makes the decision
"not logged", counted and logged, and never fails the inspection.

Readers (the read API, ``jaffnet replay``) open their own read-only connections: with WAL
they never block the writer.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger("ray.serve")

DATABASE_FILE = "decisions.sqlite"
SCHEMA_VERSION = 2  # 2: the reviews table (serving.reviews)
# Ids as the service makes them (uuid4 hex) and a client's own x-request-id, within reason. Checked
# with fullmatch: `$` alone would let a trailing newline through.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)


def valid_request_id(text: str) -> bool:
    return _REQUEST_ID.fullmatch(text) is not None
PNG_COMPRESSION = 3  # zlib level: frames are stored losslessly, replay needs the exact pixels

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    ts REAL NOT NULL,
    line TEXT, station TEXT, part_id TEXT,
    model_name TEXT NOT NULL, model_version TEXT NOT NULL, model_run_id TEXT,
    decision TEXT NOT NULL CHECK (decision IN ('OK', 'NG')),
    image_score REAL NOT NULL,
    reply TEXT NOT NULL,
    has_frame INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_ts ON decisions (ts);
CREATE INDEX IF NOT EXISTS decisions_line ON decisions (line, seq);
CREATE INDEX IF NOT EXISTS decisions_part ON decisions (part_id, seq);
CREATE TABLE IF NOT EXISTS frames (
    seq INTEGER PRIMARY KEY,
    frame_png BLOB NOT NULL,
    mask_png BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS reviews (
    seq INTEGER PRIMARY KEY,
    source TEXT NOT NULL CHECK (source IN ('review', 'escape')),
    verdict TEXT NOT NULL CHECK (verdict IN ('OK', 'NG')),
    agrees INTEGER NOT NULL,
    regions TEXT NOT NULL,
    note TEXT,
    reviewer_key_id TEXT, reviewer_role TEXT,
    ts REAL NOT NULL,
    escape_reported INTEGER NOT NULL DEFAULT 0
);
"""
# One review per decision (seq): a later review replaces it (the audit log keeps who posted each).
_REVIEWS_TABLE = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS reviews"):]


class DecisionLogSettings(BaseModel):
    """The ``decision_log:`` section of the serving config."""

    model_config = ConfigDict(extra="forbid")

    folder: str | None = Field(None, description="where decisions.sqlite lives; null: no decision log")
    frames: Literal["none", "ng", "ng+sample", "all"] = Field(
        "ng", description="which decisions keep their frame and mask; ng+sample: every NG, the OK frames near the "
                          "threshold and a random ok_sample_rate of the other OK frames (so escapes can be seen)")
    ok_sample_rate: float = Field(0.02, gt=0, le=1, description="ng+sample: the fraction of other OK frames kept")
    near_threshold_margin: float = Field(0.1, ge=0, le=1, description="ng+sample: OK frames whose image score is at "
                                                                      "least image_threshold minus this are kept")
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


@dataclass(frozen=True)
class StoredReview:
    """An operator's verdict on a logged decision (``source`` review), or a defect found later down
    the line on a part the decision passed (``source`` escape)."""

    source: str
    verdict: str
    agrees: bool  # the verdict is the model's decision
    regions: list[dict]  # {"x","y","width","height"} boxes of the defect (NG only)
    note: str | None
    reviewer_key_id: str | None  # the key's public id (None: a service without keys)
    reviewer_role: str | None
    ts: float
    escape_reported: bool = False  # a defect was found later on this part (an operator's OK corrected, or no review)


@dataclass(frozen=True)
class StoredDecision:
    seq: int
    request_id: str
    ts: float
    line: str | None
    station: str | None
    part_id: str | None
    model: dict[str, Any]
    decision: str
    image_score: float
    reply: dict[str, Any]
    has_frame: bool
    review: StoredReview | None = None

    @property
    def sample_rate(self) -> float:
        """The probability that retention kept this frame (1 for records made before sampling)."""
        return float(self.reply.get("kept", {}).get("sample_rate", 1.0))


class StoreObserver:
    """What the store reports (the ingress plugs Prometheus metrics in; tests count)."""

    def written(self, count: int) -> None: ...

    def not_logged(self, kind: str) -> None: ...

    def queue_depth(self, depth: int) -> None: ...


def png_bytes(image: np.ndarray) -> bytes:
    """A grey or RGB uint8 image (or a bool mask) as PNG bytes."""
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:  # pragma: no cover - encoding a 2-D/3-channel uint8 array does not fail
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


def read_png(data: bytes, colour: bool = True) -> np.ndarray:
    """Stored PNG bytes -> RGB (``colour``) or single-channel uint8."""
    flag = cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise ValueError("a stored PNG cannot be decoded")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if colour else image


def database_path(folder: str | Path) -> Path:
    return Path(folder) / DATABASE_FILE


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
    if reply["image_score"] >= reply["image_threshold"] - settings.near_threshold_margin:
        return {"reason": "near_threshold", "sample_rate": 1.0}
    if draw() < settings.ok_sample_rate:
        return {"reason": "sample", "sample_rate": settings.ok_sample_rate}
    return None


def open_store(path: Path, schema: str, synchronous: str) -> sqlite3.Connection:
    """A writing connection to a WAL store (created with ``schema`` if new), for one writer thread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        connection.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect on a new file
        if connection.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise sqlite3.OperationalError("the store cannot use WAL journaling")
        connection.execute(f"PRAGMA synchronous = {synchronous}")
        connection.execute("PRAGMA busy_timeout = 5000")
        connection.executescript(schema)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except Exception:
        connection.close()
        raise
    connection.isolation_level = "DEFERRED"  # `with connection:` opens and commits a transaction
    return connection


def read_only(path: Path) -> sqlite3.Connection:
    """A reader's connection: with WAL it never blocks the writer."""
    if not path.is_file():
        raise FileNotFoundError(f"no store at {path}")
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    connection.execute("PRAGMA busy_timeout = 5000")
    return connection


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


class DecisionReader:
    """Read-only queries on a decision log folder (the read API and ``jaffnet replay``)."""

    def __init__(self, folder: str | Path):
        self.path = database_path(folder)

    def _connect(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise FileNotFoundError(f"no decision log at {self.path}")
        connection = read_only(self.path)
        # A log written before reviews existed (schema 1) has no reviews table until the writer next
        # opens it: an empty temporary one lets every query join it meanwhile.
        if connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'reviews'").fetchone() is None:
            connection.execute(_REVIEWS_TABLE.replace("CREATE TABLE", "CREATE TEMP TABLE"))
        return connection

    def exists(self) -> bool:
        return self.path.is_file()

    def page(self, *, line: str | None = None, decision: str | None = None, since: float | None = None,
             until: float | None = None, before_seq: int | None = None, reviewed: bool | None = None,
             disagrees: bool | None = None, limit: int = 50) -> list[StoredDecision]:
        """Newest first; ``before_seq`` continues a page (the cursor). ``disagrees`` implies reviewed."""
        where, values = _filters(line=line, decision=decision, since=since, until=until, before_seq=before_seq,
                                 reviewed=reviewed, disagrees=disagrees)
        sql = f"SELECT {_COLUMNS} FROM {_JOINED}{where} ORDER BY d.seq DESC LIMIT ?"
        with closing(self._connect()) as connection:
            return [_stored(row) for row in connection.execute(sql, (*values, limit))]

    def get(self, request_id: str) -> StoredDecision | None:
        with closing(self._connect()) as connection:
            row = connection.execute(f"SELECT {_COLUMNS} FROM {_JOINED} WHERE d.request_id = ?",
                                     (request_id,)).fetchone()
        return None if row is None else _stored(row)

    def frame(self, seq: int) -> tuple[bytes, bytes] | None:
        """(frame PNG, mask PNG) of a record that kept its frame."""
        with closing(self._connect()) as connection:
            return connection.execute("SELECT frame_png, mask_png FROM frames WHERE seq = ?", (seq,)).fetchone()

    def counts(self, since: float) -> list[tuple[str | None, str, int]]:
        """(line, decision, count) of the decisions since ``since``."""
        with closing(self._connect()) as connection:
            return connection.execute("SELECT line, decision, COUNT(*) FROM decisions WHERE ts >= ? "
                                      "GROUP BY line, decision ORDER BY line", (since,)).fetchall()

    def with_frames(self, *, since: float | None = None, until: float | None = None,
                    line: str | None = None) -> Iterator[tuple[StoredDecision, bytes]]:
        """Oldest first, every record that kept its frame, with the frame PNG (one row at a time)."""
        where, values = _filters(line=line, since=since, until=until)
        sql = (f"SELECT {_COLUMNS}, frames.frame_png FROM {_JOINED} JOIN frames ON frames.seq = d.seq{where} "
               "ORDER BY d.seq")
        with closing(self._connect()) as connection:
            for row in connection.execute(sql, values):
                yield _stored(row[:-1]), row[-1]

    def total(self, *, since: float | None = None, until: float | None = None, line: str | None = None) -> int:
        where, values = _filters(line=line, since=since, until=until)
        with closing(self._connect()) as connection:
            return connection.execute(f"SELECT COUNT(*) FROM {_JOINED}{where}", values).fetchone()[0]

    def reviewed(self, *, line: str | None = None, since: float | None = None) -> list[StoredDecision]:
        """Every reviewed decision (and reported escape) in range, oldest first."""
        where, values = _filters(line=line, since=since, reviewed=True)
        with closing(self._connect()) as connection:
            return [_stored(row) for row in
                    connection.execute(f"SELECT {_COLUMNS} FROM {_JOINED}{where} ORDER BY d.seq", values)]

    def latest_for_part(self, part_id: str, line: str | None = None) -> StoredDecision | None:
        """The newest decision on a part (on ``line``, when given)."""
        where, values = _filters(part_id=part_id, line=line)
        with closing(self._connect()) as connection:
            row = connection.execute(f"SELECT {_COLUMNS} FROM {_JOINED}{where} ORDER BY d.seq DESC LIMIT 1",
                                     values).fetchone()
        return None if row is None else _stored(row)


def write_review(path: Path, seq: int, review: StoredReview) -> bool:
    """Store ``review`` of decision ``seq`` (replacing an earlier one); False when retention has
    dropped the decision meanwhile. Reviews are human-paced, so each opens its own short writing
    connection; WAL and the busy timeout serialise it with the decision writer's transactions."""
    with closing(open_store(path, _SCHEMA, "FULL")) as connection, connection:
        cursor = connection.execute(
            "INSERT OR REPLACE INTO reviews (seq, source, verdict, agrees, regions, note, reviewer_key_id, "
            "reviewer_role, ts, escape_reported) SELECT ?,?,?,?,?,?,?,?,?,? "
            "WHERE EXISTS (SELECT 1 FROM decisions WHERE seq = ?)",
            (seq, review.source, review.verdict, review.agrees, json.dumps(review.regions, separators=(",", ":")),
             review.note, review.reviewer_key_id, review.reviewer_role, review.ts, review.escape_reported, seq))
        return cursor.rowcount == 1


_JOINED = "decisions AS d LEFT JOIN reviews AS r ON r.seq = d.seq"
_COLUMNS = ("d.seq, d.request_id, d.ts, d.line, d.station, d.part_id, d.model_name, d.model_version, "
            "d.model_run_id, d.decision, d.image_score, d.reply, d.has_frame, "
            "r.source, r.verdict, r.agrees, r.regions, r.note, r.reviewer_key_id, r.reviewer_role, r.ts, "
            "r.escape_reported")
_CLAUSES = {"line": "d.line = ?", "decision": "d.decision = ?", "since": "d.ts >= ?", "until": "d.ts < ?",
            "before_seq": "d.seq < ?", "part_id": "d.part_id = ?"}
_FLAGS = {"reviewed": ("r.seq IS NOT NULL", "r.seq IS NULL"), "disagrees": ("r.agrees = 0", "r.agrees = 1")}


def _filters(**conditions: Any) -> tuple[str, tuple]:
    """A WHERE clause over ``_JOINED``: value conditions bind a parameter, flags (True/False) do not."""
    clauses, values = [], []
    for key, value in conditions.items():
        if value is None:
            continue
        if key in _FLAGS:
            clauses.append(_FLAGS[key][0 if value else 1])
        else:
            clauses.append(_CLAUSES[key])
            values.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(values)


def _stored(row: tuple) -> StoredDecision:
    (seq, request_id, ts, line, station, part_id, model_name, model_version, model_run_id, decision, image_score,
     reply, has_frame, *review) = row
    source, verdict, agrees, regions, note, reviewer_key_id, reviewer_role, reviewed_ts, escaped = review
    return StoredDecision(seq=seq, request_id=request_id, ts=ts, line=line, station=station, part_id=part_id,
                          model={"name": model_name, "version": model_version, "run_id": model_run_id},
                          decision=decision, image_score=image_score, reply=json.loads(reply),
                          has_frame=bool(has_frame),
                          review=None if source is None else StoredReview(
                              source, verdict, bool(agrees), json.loads(regions), note, reviewer_key_id,
                              reviewer_role, reviewed_ts, bool(escaped)))
