"""The decision log store on its own: one writer thread, SQLite in WAL, retention, failures."""

import asyncio
import sqlite3
import threading
import time

import numpy as np
import pytest
from fastapi import FastAPI

from pipelines.decision_records import DecisionReader, read_png, valid_request_id
from serving.decision_log import (DecisionLog, DecisionLogSettings, NotLogged, PendingDecision, StoreObserver,
                                  retention)
from serving.decisions import DecisionRecorder


def reply(index: int, decision: str = "NG", line: str | None = "L1", score: float = 0.9) -> dict:
    return {"request_id": f"req-{index:04d}", "model": {"name": "m", "version": "3", "run_id": "r"},
            "decision": decision, "reason": "test", "image_score": score, "image_threshold": 0.5, "threshold": 0.5,
            "region_count": 1, "regions": [{"bbox": {"x": 1, "y": 2, "width": 3, "height": 4}, "area_px": 12,
                                            "max_probability": 1.0}],
            **({"line": line} if line else {})}


NOW = time.time()  # records are stamped around now: older ones fall to the age limit


def frame(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    return pixels, pixels[:, :, 0] > 200


class Counting(StoreObserver):
    def __init__(self):
        self.written_total, self.kinds, self.depths = 0, [], []

    def written(self, count):
        self.written_total += count

    def not_logged(self, kind):
        self.kinds.append(kind)

    def queue_depth(self, depth):
        self.depths.append(depth)


def settings(tmp_path, **changes) -> DecisionLogSettings:
    return DecisionLogSettings(folder=str(tmp_path / "log"), **changes)


def write(log: DecisionLog, replies, with_frames=True) -> list:
    futures = []
    for index, body in enumerate(replies):
        pixels, mask = frame(index) if with_frames else (None, None)
        futures.append(log.submit(PendingDecision(body, NOW + index, pixels, mask)))
    return [future.result(timeout=30) for future in futures]


def test_every_decision_becomes_one_record_with_its_fields(tmp_path):
    observer = Counting()
    log = DecisionLog(settings(tmp_path), observer)
    seqs = write(log, [reply(i, "NG" if i % 2 else "OK", line=f"L{i % 3}") for i in range(10)])
    log.close()
    assert seqs == sorted(seqs) and len(set(seqs)) == 10 and observer.written_total == 10

    reader = DecisionReader(tmp_path / "log")
    newest_first = reader.page(limit=100)
    assert [d.request_id for d in newest_first] == [f"req-{i:04d}" for i in reversed(range(10))]
    stored = reader.get("req-0007")
    assert (stored.decision, stored.line, stored.model["version"], stored.image_score) == ("NG", "L1", "3", 0.9)
    assert stored.reply["regions"][0]["bbox"] == {"x": 1, "y": 2, "width": 3, "height": 4}
    frame_png, mask_png = reader.frame(stored.seq)
    pixels, mask = frame(7)
    assert np.array_equal(read_png(frame_png), pixels)  # lossless: replay needs the exact pixels
    assert np.array_equal(read_png(mask_png, colour=False) > 127, mask)
    assert [d.request_id for d in reader.page(line="L1", decision="NG", limit=100)] == ["req-0007", "req-0001"]
    assert [d.request_id for d in reader.page(since=NOW + 3, until=NOW + 5)] == ["req-0004", "req-0003"]
    second_page = reader.page(before_seq=newest_first[2].seq, limit=3)
    assert [d.request_id for d in second_page] == ["req-0006", "req-0005", "req-0004"]
    assert sorted(reader.counts(0)) == sorted([("L0", "NG", 2), ("L0", "OK", 2), ("L1", "NG", 2),
                                               ("L1", "OK", 1), ("L2", "NG", 1), ("L2", "OK", 2)])
    with sqlite3.connect(reader.path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_retention_drops_the_oldest_beyond_count_age_and_bytes(tmp_path):
    log = DecisionLog(settings(tmp_path / "count", max_records=5))
    write(log, [reply(i) for i in range(12)])
    log.close()
    reader = DecisionReader(tmp_path / "count" / "log")
    assert [d.request_id for d in reader.page()] == [f"req-{i:04d}" for i in (11, 10, 9, 8, 7)]
    with sqlite3.connect(reader.path) as connection:  # frames go with their records
        assert connection.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 5

    now = [NOW + 86400]
    log = DecisionLog(settings(tmp_path / "age", max_age_days=0.5), clock=lambda: now[0])
    write(log, [reply(i) for i in range(3)])  # stamped a day before "now"
    log.submit(PendingDecision(reply(99), now[0])).result(timeout=30)
    log.close()
    assert [d.request_id for d in DecisionReader(tmp_path / "age" / "log").page()] == ["req-0099"]

    log = DecisionLog(settings(tmp_path / "bytes", max_bytes=1024 * 1024))
    big = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)  # ~360 kB as PNG
    for index in range(6):
        log.submit(PendingDecision(reply(index), NOW + index, big, big[:, :, 0] > 128)).result(timeout=30)
    log.close()
    kept = [d.request_id for d in DecisionReader(tmp_path / "bytes" / "log").page()]
    assert kept == ["req-0005", "req-0004"], kept  # three would pass 1 MiB


def test_frames_setting_keeps_none_ng_or_all(tmp_path):
    for frames, expected in (("none", set()), ("ng", {"req-0001"}), ("all", {"req-0000", "req-0001"})):
        recorder = DecisionRecorder(settings(tmp_path / frames, frames=frames), FastAPI())
        pixels, mask = frame()
        for body in (reply(0, "OK"), reply(1, "NG")):
            assert asyncio.run(recorder.record(body, pixels, mask)) == {"status": "logged"}
        recorder.close()
        reader = DecisionReader(tmp_path / frames / "log")
        assert {d.request_id for d in reader.page() if d.has_frame} == expected
        assert {d.request_id for d in reader.page(has_frame=True)} == expected  # the review queue's filter
        assert {d.request_id for d in reader.page(has_frame=False)} == {"req-0000", "req-0001"} - expected


def test_a_broken_store_degrades_to_not_logged(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log folder should be")
    observer = Counting()
    recorder = DecisionRecorder(DecisionLogSettings(folder=str(blocker / "log")), FastAPI())
    recorder.log.observer = observer
    status = asyncio.run(recorder.record(reply(0), *frame()))
    recorder.close()
    assert status["status"] == "not_logged" and "store failed" in status["reason"]
    assert str(tmp_path) not in status["reason"]  # the cause, with its server path, is logged, not returned
    assert observer.kinds == ["store_failed"]


class TinyDisk(DecisionLog):
    """A real SQLITE_FULL: the database may not grow past a few pages."""

    def _connect(self):
        connection = super()._connect()
        connection.execute("PRAGMA max_page_count = 40")
        return connection


def test_a_full_disk_fails_the_write_not_the_writer(tmp_path):
    observer = Counting()
    log = TinyDisk(settings(tmp_path), observer)
    small = log.submit(PendingDecision(reply(0), NOW)).result(timeout=30)
    big = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)  # ~480 kB
    with pytest.raises(NotLogged, match="store failed"):
        log.submit(PendingDecision(reply(1), NOW + 1, big, big[:, :, 0] > 0)).result(timeout=30)
    after = log.submit(PendingDecision(reply(2), NOW + 2)).result(timeout=30)  # the writer recovered
    log.close()
    assert small < after and observer.kinds == ["store_failed"]
    assert [d.request_id for d in DecisionReader(tmp_path / "log").page()] == ["req-0002", "req-0000"]


class Stalled(DecisionLog):
    """A writer that waits at the gate before each batch."""

    def __init__(self, *args, **kwargs):
        self.gate = threading.Event()
        super().__init__(*args, **kwargs)

    def _write(self, batch):
        self.gate.wait(30)
        super()._write(batch)


def test_a_full_queue_and_bad_ids_are_refused_at_once(tmp_path):
    observer = Counting()
    log = Stalled(settings(tmp_path, queue_size=1), observer)
    taken = log.submit(PendingDecision(reply(0), NOW))  # the writer holds it at the gate
    time.sleep(0.2)
    queued = log.submit(PendingDecision(reply(1), NOW))  # fills the one-place queue
    with pytest.raises(NotLogged, match="queue is full"):
        log.submit(PendingDecision(reply(2), NOW)).result(timeout=1)
    bad = reply(3) | {"request_id": "../../etc/passwd"}
    with pytest.raises(NotLogged, match="request id"):
        log.submit(PendingDecision(bad, NOW)).result(timeout=1)
    log.gate.set()
    assert taken.result(timeout=30) < queued.result(timeout=30)
    with pytest.raises(NotLogged, match="already in the log"):
        log.submit(PendingDecision(reply(1), NOW)).result(timeout=30)
    log.close()
    assert observer.kinds == ["queue_full", "bad_request_id", "duplicate_request_id"]


def test_request_ids_must_match_whole():
    assert valid_request_id("0f8e6c3a9b7d4e2f8a1b2c3d4e5f6a7b") and valid_request_id("client-42.a_b")
    for bad in ("req-1\n", "", "-x", "a b", "a" * 129, "../etc"):
        assert not valid_request_id(bad), bad


def test_a_reopened_log_keeps_its_records_and_limits(tmp_path):
    log = DecisionLog(settings(tmp_path, max_records=4))
    write(log, [reply(i) for i in range(3)])
    log.close()
    log = DecisionLog(settings(tmp_path, max_records=4))  # a restarted ingress
    write(log, [reply(i) for i in range(3, 6)])
    log.close()
    assert [d.request_id for d in DecisionReader(tmp_path / "log").page()] == [f"req-{i:04d}" for i in (5, 4, 3, 2)]


def test_no_folder_means_no_log(tmp_path):
    recorder = DecisionRecorder(DecisionLogSettings(), FastAPI())
    assert asyncio.run(recorder.record(reply(0), *frame())) == {"status": "off"}


def test_ng_sample_keeps_every_ng_the_ok_frames_near_the_cut_and_about_the_sampled_fraction(tmp_path):
    import random

    sampled = settings(tmp_path, frames="ng+sample", ok_sample_rate=0.1, near_threshold_log_odds=1.0)
    draw = random.Random(7).random
    assert retention(sampled, reply(0, "NG", score=0.9), draw) == {"reason": "ng", "sample_rate": 1.0}
    for score in (0.41, 0.6):  # just below the 0.5 cut (log-odds -0.36 vs 0), or over it but OK by the area rule
        assert retention(sampled, reply(0, "OK", score=score), draw) == {"reason": "near_threshold",
                                                                         "sample_rate": 1.0}
    # Under a low calibrated cut "near" scales with it: 3e-4 is within 1 log-odds of 2e-4, 1e-5 is not.
    low_cut = {**reply(0, "OK"), "image_threshold": 2e-4}
    assert retention(sampled, {**low_cut, "image_score": 3e-4}, draw)["reason"] == "near_threshold"
    assert retention(sampled, {**low_cut, "image_score": 1e-5}, lambda: 0.99) is None
    assert retention(sampled, {**low_cut, "image_score": 0.0}, lambda: 0.99) is None  # a score of 0 stays finite
    kept = [retention(sampled, reply(0, "OK", score=0.1), draw) for _ in range(5000)]
    chosen = [k for k in kept if k is not None]
    assert all(k == {"reason": "sample", "sample_rate": 0.1} for k in chosen)
    assert 430 <= len(chosen) <= 570  # 500 expected, sd 21
    assert retention(settings(tmp_path), reply(0, "OK", score=0.49), draw) is None  # frames: ng
    assert retention(settings(tmp_path, frames="all"), reply(0, "OK"), draw)["reason"] == "all"

    recorder = DecisionRecorder(sampled, FastAPI(), draw=lambda: 0.0)  # the coin always says keep
    pixels, mask = frame()
    for body in (reply(0, "OK", score=0.1), reply(1, "OK", score=0.45), reply(2, "NG")):
        assert asyncio.run(recorder.record(body, pixels, mask)) == {"status": "logged"}
    recorder.close()
    stored = {d.request_id: d for d in DecisionReader(tmp_path / "log").page()}
    assert [(stored[i].has_frame, stored[i].reply["kept"]["reason"], stored[i].sample_rate)
            for i in ("req-0000", "req-0001", "req-0002")] == [(True, "sample", 0.1), (True, "near_threshold", 1.0),
                                                              (True, "ng", 1.0)]
