"""The decision log's records: what the endpoint decided on each frame and what operators said
about it, as stored in ``decisions.sqlite`` (the schema, the read side and the review writes).

Serving writes decisions (``serving.decision_log``: its writer thread and retention); the
commands that learn from the line read them here without importing serving: ``jaffnet replay``,
``jaffnet calibrate --log`` and ``jaffnet ingest --format decision-log``. Readers open their
own read-only connections: with WAL they never block the writer.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipelines.codec import encode_png

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


def png_bytes(image: np.ndarray) -> bytes:
    """A grey or RGB uint8 image (or a bool mask) as PNG bytes, at the log's compression level."""
    return encode_png(image, PNG_COMPRESSION)


def read_png(data: bytes, colour: bool = True) -> np.ndarray:
    """Stored PNG bytes -> RGB (``colour``) or single-channel uint8."""
    flag = cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise ValueError("a stored PNG cannot be decoded")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if colour else image


def iso_time(seconds: float) -> str:
    """A record's unix time as the API and every export write it: UTC, milliseconds, ``Z``."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def database_path(folder: str | Path) -> Path:
    return Path(folder) / DATABASE_FILE


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
             disagrees: bool | None = None, has_frame: bool | None = None, limit: int = 50) -> list[StoredDecision]:
        """Newest first; ``before_seq`` continues a page (the cursor). ``disagrees`` implies reviewed."""
        where, values = _filters(line=line, decision=decision, since=since, until=until, before_seq=before_seq,
                                 reviewed=reviewed, disagrees=disagrees, has_frame=has_frame)
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

    def reviewed(self, *, line: str | None = None, since: float | None = None,
                 until: float | None = None) -> list[StoredDecision]:
        """Every reviewed decision (and reported escape) in range, oldest first."""
        where, values = _filters(line=line, since=since, until=until, reviewed=True)
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
_FLAGS = {"reviewed": ("r.seq IS NOT NULL", "r.seq IS NULL"), "disagrees": ("r.agrees = 0", "r.agrees = 1"),
          "has_frame": ("d.has_frame = 1", "d.has_frame = 0")}


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
