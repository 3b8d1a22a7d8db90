"""The audit log store on its own: rows written by one thread, kept like the decision log."""

import time

from serving.audit_log import AuditEntry, AuditLog, read_audit
from serving.decision_log import DecisionLogSettings


def entry(index: int, ts: float, **changes) -> AuditEntry:
    fields = dict(ts=ts, request_id=f"{index:032x}", key_id="0123456789ab", role="operator", method="GET",
                  route="/v1/decisions/{request_id}", path=f"/v1/decisions/r{index}", status=200, client="10.0.0.9")
    return AuditEntry(**{**fields, **changes})


def test_rows_are_written_and_read_back_newest_first(tmp_path):
    log = AuditLog(DecisionLogSettings(folder=str(tmp_path)))
    now = time.time()
    log.record(entry(0, now, key_id=None, role=None, status=401, reason="unknown_key"))
    log.record(entry(1, now + 1))
    log.close()
    rows = read_audit(tmp_path)
    assert [row.request_id for row in rows] == [f"{1:032x}", f"{0:032x}"]
    assert rows[1] == entry(0, now, key_id=None, role=None, status=401, reason="unknown_key")


def test_retention_follows_the_decision_logs_age_and_a_row_count(tmp_path):
    now = time.time()
    log = AuditLog(DecisionLogSettings(folder=str(tmp_path), max_age_days=1, audit_max_records=1000),
                   clock=lambda: now)
    for index in range(1200):
        log.record(entry(index, now - 2 * 86400 if index < 10 else now))  # ten rows two days old
    log.close()
    rows = read_audit(tmp_path, limit=5000)
    assert len(rows) == 1000 and rows[0].request_id == f"{1199:032x}" and rows[-1].request_id == f"{200:032x}"


def test_a_broken_store_loses_rows_not_the_service(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("the folder would have to be inside this file")
    log = AuditLog(DecisionLogSettings(folder=str(blocker / "log")))
    log.record(entry(0, time.time()))
    log.close()
    assert not log._thread.is_alive()
