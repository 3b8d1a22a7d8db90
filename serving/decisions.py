"""The decision log inside the service: recording from ``/v1/inspect`` and the read API.

- :func:`client_fields`: the optional ``line``, ``station``, ``part_id`` query parameters of
  ``/v1/inspect`` (validated; echoed in the reply and stored with the decision).
- :class:`DecisionRecorder`: one per ingress replica; hands each decision to the
  :class:`~serving.decision_log.DecisionLog` writer and waits a bounded time for its commit.
- ``router``: ``GET /v1/decisions`` (filtered, newest first, paged with a cursor),
  ``GET /v1/decisions/{request_id}`` with its frame, mask and overlay PNGs, and
  ``GET /v1/decision-counts``. Reads open their own read-only SQLite connection in a
  worker thread, so they never wait for (or block) the writer. Frame, mask and overlay
  reads (PNG decoding and drawing) run in a thread pool of their own with a bounded wait
  (:class:`ImageReads`), so a flood of them cannot take the threads ``/v1/inspect`` decodes in.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at runtime.
import asyncio
import functools
import logging
import random
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import Response

from pipelines.decision_records import (REQUEST_ID_PATTERN, DecisionReader, StoredDecision, StoredReview, iso_time,
                                        png_bytes, read_png)
from serving.decision_log import DecisionLog, DecisionLogSettings, NotLogged, PendingDecision, retention
from serving.errors import InspectionError
from serving.metrics import InspectionMetrics
from serving.overlay import draw_overlay, shrink_to
from serving.schemas import DecisionCounts, DecisionDetail, DecisionPage, ErrorReply

logger = logging.getLogger("ray.serve")

CLIENT_FIELD_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"  # no spaces, slashes or markup
MAX_PAGE = 200
CURSOR_PATTERN = r"^[0-9]{1,18}$"
_UNSTORED_REPLY_KEYS = ("mask_png_base64", "probability_map", "decision_log")
IMAGE_READ_THREADS = 1
IMAGE_READS_WAITING = 16  # beyond: 503 at once (the per-key limit is serving.access's)


# -- recording (the ingress) ------------------------------------------------------------------

@dataclass(frozen=True)
class ClientFields:
    line: str | None = None
    station: str | None = None
    part_id: str | None = None

    def echo(self) -> dict[str, str]:
        return {key: value for key, value in vars(self).items() if value is not None}


def client_fields(
    line: str | None = Query(None, pattern=CLIENT_FIELD_PATTERN, description="production line, e.g. L3"),
    station: str | None = Query(None, pattern=CLIENT_FIELD_PATTERN, description="camera station on the line"),
    part_id: str | None = Query(None, pattern=CLIENT_FIELD_PATTERN, description="the part's serial or id"),
) -> ClientFields:
    """FastAPI dependency: ``client: ClientFields = Depends(client_fields)``."""
    return ClientFields(line, station, part_id)


class DecisionRecorder:
    """Records the replica's decisions (and counts them in the metrics)."""

    def __init__(self, settings: DecisionLogSettings, app: FastAPI, metrics: InspectionMetrics | None = None,
                 draw=random.random):
        self.settings = settings
        self.metrics = metrics
        self.draw = draw  # the OK sample's coin (tests pass a seeded one)
        self.log = DecisionLog(settings, metrics) if settings.folder else None
        # The read routes find this replica's log here.
        app.state.decision_reader = DecisionReader(settings.folder) if settings.folder else None

    async def record(self, reply: dict, pixels, mask) -> dict:
        """The reply's ``decision_log`` block: ``logged`` only once the record is committed."""
        if self.metrics is not None:
            self.metrics.decided(reply["decision"], str(reply["model"]["version"]), reply["image_score"])
        if self.log is None:
            return {"status": "off"}
        kept = retention(self.settings, reply, self.draw)
        keep = kept is not None
        stored = {key: value for key, value in reply.items() if key not in _UNSTORED_REPLY_KEYS}
        if keep:
            stored["kept"] = kept
        future = self.log.submit(PendingDecision(stored, time.time(), pixels if keep else None,
                                                 mask if keep else None))
        wait_s = self.settings.wait_for_commit_s
        try:
            if wait_s == 0 and not future.done():
                return {"status": "queued"}
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), wait_s)
        except NotLogged as exc:
            return {"status": "not_logged", "reason": str(exc)}
        except asyncio.TimeoutError:
            if future.cancel():  # the writer had not taken it: it never will
                self.log.observer.not_logged("commit_timeout")
                return {"status": "not_logged",
                        "reason": f"the decision log did not take it within {wait_s:g} s (queue backed up)"}
            return {"status": "queued", "reason": f"not committed within {wait_s:g} s"}
        return {"status": "logged"}

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


# -- the read API -----------------------------------------------------------------------------

class ImageReads:
    """Frame, mask and overlay reads: their own threads, at most ``waiting`` queued or running."""

    def __init__(self, threads: int = IMAGE_READ_THREADS, waiting: int = IMAGE_READS_WAITING):
        self.waiting = waiting
        self.pending = 0
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, function, *args):
        if self.pending >= self.waiting:  # only the event loop's thread counts: no lock needed
            raise InspectionError(503, "reads_busy", "too many image reads are waiting; retry shortly",
                                  headers={"Retry-After": "1"})
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="image-reads")
        self.pending += 1
        try:
            return await _guarded(asyncio.get_running_loop().run_in_executor(self._executor, function, *args))
        finally:
            self.pending -= 1


async def _guarded(awaitable):
    """A store error becomes a 503 whose message names no file; the cause goes to the log."""
    try:
        return await awaitable
    except (sqlite3.Error, OSError, ValueError) as exc:  # ValueError: an undecodable stored record
        logger.error("decision log read failed: %s: %s", type(exc).__name__, exc)
        raise InspectionError(503, "decision_log_unavailable", "the decision log cannot be read now",
                              headers={"Retry-After": "5"}) from None


async def _read(function, *args):
    return await _guarded(asyncio.to_thread(function, *args))


IMAGE_READS = ImageReads()
router = APIRouter(tags=["decisions"])
_ERRORS = {404: {"model": ErrorReply, "description": "no such decision, or no decision log configured"},
           422: {"model": ErrorReply, "description": "a parameter out of range or malformed"}}


def _reader(request: Request) -> DecisionReader:
    reader = getattr(request.app.state, "decision_reader", None)
    if reader is None:
        raise InspectionError(404, "no_decision_log", "this service has no decision log (decision_log.folder)")
    if not reader.exists():
        raise InspectionError(404, "no_decisions_yet", "no decision has been logged yet")
    return reader


def _timestamp(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # a time without a zone is UTC, as every time this API writes
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _links(request: Request, stored: StoredDecision) -> dict:
    base = f"{request.scope.get('root_path', '')}/v1/decisions/{stored.request_id}"
    images = {"frame_png": f"{base}/frame.png", "mask_png": f"{base}/mask.png",
              "overlay_png": f"{base}/overlay.png"} if stored.has_frame else {}
    return {"self": base, **images}


def _summary(request: Request, stored: StoredDecision) -> dict:
    reply = stored.reply
    return {"request_id": stored.request_id, "time": iso_time(stored.ts), "line": stored.line,
            "station": stored.station, "part_id": stored.part_id, "model": stored.model,
            "decision": stored.decision, "image_score": stored.image_score,
            "image_threshold": reply["image_threshold"], "region_count": reply["region_count"],
            "links": _links(request, stored), "kept": stored.reply.get("kept"),
            "review": review_out(stored.review) if stored.review else None}


def review_out(review: StoredReview) -> dict:
    return {"source": review.source, "verdict": review.verdict, "agrees": review.agrees, "regions": review.regions,
            "note": review.note, "escape_reported": review.escape_reported,
            "reviewer": {"key_id": review.reviewer_key_id, "role": review.reviewer_role}, "time": iso_time(review.ts)}


def _detail(request: Request, stored: StoredDecision) -> dict:
    reply = stored.reply
    keys = ("reason", "threshold", "min_defect_area_px", "defect_score", "defect_area_px", "largest_region_px",
            "regions", "image", "timings_ms")
    return {**_summary(request, stored), **{key: reply[key] for key in keys}}


@router.get("/v1/decisions", response_model=DecisionPage, responses=_ERRORS)
async def list_decisions(
    request: Request,
    line: str | None = Query(None, pattern=CLIENT_FIELD_PATTERN),
    decision: str | None = Query(None, pattern="^(OK|NG)$"),
    since: datetime | None = Query(None, description="ISO 8601 (UTC if no zone is given), inclusive"),
    until: datetime | None = Query(None, description="ISO 8601 (UTC if no zone is given), exclusive"),
    limit: int = Query(50, ge=1, le=MAX_PAGE),
    cursor: str | None = Query(None, pattern=CURSOR_PATTERN, description="next_cursor of the previous page"),
    reviewed: bool | None = Query(None, description="true: only decisions with a verdict; false: only those "
                                                    "without (the review queue)"),
    disagrees: bool | None = Query(None, description="true: reviewed, and the verdict is not the model's; "
                                                     "false: reviewed and agreeing"),
    has_frame: bool | None = Query(None, description="true: only decisions that kept their frame (reviewable); "
                                                     "false: only those that did not"),
) -> dict:
    reader = _reader(request)
    # one more row than asked: is there a next page?
    rows = await _read(functools.partial(reader.page, line=line, decision=decision, since=_timestamp(since),
                                   until=_timestamp(until), before_seq=int(cursor) if cursor else None,
                                   reviewed=reviewed, disagrees=disagrees, has_frame=has_frame,
                                   limit=limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [_summary(request, row) for row in rows],
            "next_cursor": str(rows[-1].seq) if more else None}


@router.get("/v1/decision-counts", response_model=DecisionCounts, responses=_ERRORS)
async def decision_counts(request: Request, window_s: int = Query(3600, ge=60, le=31 * 86400)) -> dict:
    """OK and NG counts per line over the last ``window_s`` seconds."""
    reader = _reader(request)
    since = time.time() - window_s
    lines: dict[str | None, dict] = {}
    for line, decision, count in await _read(reader.counts, since):
        lines.setdefault(line, {"line": line, "ok": 0, "ng": 0})[decision.lower()] = count
    return {"since": iso_time(since), "window_s": window_s, "lines": list(lines.values())}


RequestId = Path(pattern=REQUEST_ID_PATTERN, description="the request_id of an /v1/inspect reply")


async def _stored(request: Request, request_id: str) -> StoredDecision:
    stored = await _read(_reader(request).get, request_id)
    if stored is None:
        raise InspectionError(404, "unknown_request_id", f"no logged decision has request id {request_id}")
    return stored


@router.get("/v1/decisions/{request_id}", response_model=DecisionDetail, responses=_ERRORS)
async def get_decision(request: Request, request_id: str = RequestId) -> dict:
    return _detail(request, await _stored(request, request_id))


async def _frame_and_mask(request: Request, request_id: str) -> tuple[StoredDecision, bytes, bytes]:
    stored = await _stored(request, request_id)
    images = await IMAGE_READS.run(_reader(request).frame, stored.seq) if stored.has_frame else None
    if images is None:  # retention kept the record but not its frame
        raise InspectionError(404, "frame_not_kept", f"the frame of {request_id} was not kept (decision_log.frames)")
    return stored, images[0], images[1]


_PNG = {"content": {"image/png": {}}, "description": "PNG"}


@router.get("/v1/decisions/{request_id}/frame.png", response_class=Response, responses={200: _PNG, **_ERRORS})
async def get_frame(request: Request, request_id: str = RequestId) -> Response:
    _, frame_png, _ = await _frame_and_mask(request, request_id)
    return Response(frame_png, media_type="image/png")


@router.get("/v1/decisions/{request_id}/mask.png", response_class=Response, responses={200: _PNG, **_ERRORS})
async def get_mask(request: Request, request_id: str = RequestId) -> Response:
    _, _, mask_png = await _frame_and_mask(request, request_id)
    return Response(mask_png, media_type="image/png")


@router.get("/v1/decisions/{request_id}/overlay.png", response_class=Response, responses={200: _PNG, **_ERRORS})
async def get_overlay(request: Request, request_id: str = RequestId,
                      max_side: int | None = Query(None, ge=32, le=4096, description="shrink to this longer side")
                      ) -> Response:
    stored, frame_png, mask_png = await _frame_and_mask(request, request_id)
    png = await IMAGE_READS.run(render_overlay, frame_png, mask_png, stored.reply["regions"], max_side)
    return Response(png, media_type="image/png")


def render_overlay(frame_png: bytes, mask_png: bytes, regions: list[dict], max_side: int | None = None) -> bytes:
    """Stored frame + mask + region boxes as PNG bytes (shrunk after drawing, boxes stay visible)."""
    frame = read_png(frame_png)
    mask = read_png(mask_png, colour=False) > 127
    return png_bytes(shrink_to(draw_overlay(frame, mask, regions), max_side))
