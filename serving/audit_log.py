"""The audit log: who did what through the HTTP API.

One row per request the access layer (``serving.access``) saw, refused ones included:
time, the service's request id, the key id and role (never the key), method, route
template and path (never the query string: a client may have put a key there), status,
client address and, for refusals, a short reason code. Rows go to ``audit.sqlite`` beside
the decision log and are kept ``max_age_days`` like the decisions (and at most
``audit_max_records``). As with the decision log, requests only queue their row; one
writer thread commits (``synchronous=NORMAL``: a crash may lose the last moment's rows,
never corrupt the file). A full queue drops rows, counted and logged, and never delays a
request: a flood of refused requests must stay cheap.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from contextlib import closing
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from pipelines.decision_records import open_store, read_only
from serving.decision_log import DecisionLogSettings

logger = logging.getLogger("ray.serve")

AUDIT_FILE = "audit.sqlite"
QUEUE_SIZE = 8192
BATCH = 512
DROP_REPORT_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    key_id TEXT, role TEXT,
    method TEXT NOT NULL, route TEXT NOT NULL, path TEXT NOT NULL,
    status INTEGER NOT NULL,
    client TEXT,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
"""


@dataclass(frozen=True)
class AuditEntry:
    ts: float
    request_id: str
    key_id: str | None
    role: str | None
    method: str
    route: str  # the route template, e.g. /v1/decisions/{request_id}/frame.png
    path: str
    status: int
    client: str | None
    reason: str | None = None  # why it was refused (e.g. unknown_key, other_line, rate_limited)


_COLUMNS = ", ".join(f.name for f in fields(AuditEntry))


def audit_path(folder: str | Path) -> Path:
    return Path(folder) / AUDIT_FILE


class AuditLog:
    """``record`` from the event loop; one writer thread commits."""

    def __init__(self, settings: DecisionLogSettings, clock=time.time):
        if settings.folder is None:
            raise ValueError("the audit log needs the decision log's folder")
        self.path = audit_path(settings.folder)
        self.settings = settings
        self.clock = clock
        self.dropped = 0
        self._reported_drop = 0.0
        self._queue: queue.Queue[AuditEntry | None] = queue.Queue(QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name="audit-log-writer", daemon=True)
        self._thread.start()

    def record(self, entry: AuditEntry) -> None:
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dropped += 1
            now = time.monotonic()
            if now - self._reported_drop >= DROP_REPORT_S:
                self._reported_drop = now
                logger.warning("audit log: queue full, %d row(s) dropped so far", self.dropped)

    def close(self, timeout_s: float = 10.0) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout_s)

    def _run(self) -> None:
        connection = None
        while True:
            batch = [self._queue.get()]
            while batch[-1] is not None and len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            entries = [entry for entry in batch if entry is not None]
            try:
                connection = connection or open_store(self.path, _SCHEMA, "NORMAL")
                with connection:
                    connection.executemany(f"INSERT INTO audit ({_COLUMNS}) VALUES "
                                           f"({', '.join('?' * len(fields(AuditEntry)))})",
                                           [astuple(entry) for entry in entries])
                    self._apply_retention(connection)
            except Exception as exc:  # a broken store loses these rows, never the service
                logger.error("audit log: %d row(s) not written: %s: %s", len(entries), type(exc).__name__, exc)
                if connection is not None:
                    connection.close()
                connection = None
            if batch[-1] is None:
                if connection is not None:
                    connection.close()
                return

    def _apply_retention(self, connection) -> None:
        cutoff = self.clock() - self.settings.max_age_days * 86400
        connection.execute("DELETE FROM audit WHERE ts < ?", (cutoff,))
        # seq grows by one per row: the newest audit_max_records rows are the last that many seqs
        connection.execute("DELETE FROM audit WHERE seq <= (SELECT MAX(seq) FROM audit) - ?",
                           (self.settings.audit_max_records,))


def read_audit(folder: str | Path, limit: int = 1000) -> list[AuditEntry]:
    """The newest ``limit`` rows, newest first."""
    with closing(read_only(audit_path(folder))) as connection:
        rows = connection.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
    return [AuditEntry(*row) for row in rows]
