"""Closing the loop from the line: operators' verdicts on logged decisions and the line's
estimated escape and overkill rates.

- ``POST /v1/decisions/{request_id}/review`` (operator, admin): the truth about one logged
  frame, ``{"verdict": "OK"|"NG", "regions": [boxes] (NG only), "note"}``, stored beside the
  decision with the reviewer's key id, the time and whether it agrees with the model. A later
  review of the same decision replaces it (the audit log keeps every post).
- ``POST /v1/escapes`` (operator, admin): a defect found later down the line on a part,
  ``{"part_id", "line" (optional), "note"}``: it marks the newest decision that passed the part as
  an escape (an operator's OK review of it is corrected and stays in the sample).
- ``GET /v1/line-quality?line=&since=`` (operator, admin): per line, the reviewed counts and
  the estimated escape and overkill rates with one-sided 95 % upper bounds
  (:func:`line_quality`: how they are estimated, and what they assume).

Bodies are JSON only (``application/json``: a cross-site form cannot send it without a
preflight), read with a size cap and validated strictly; a bad body is a 4xx, never a 500.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at runtime.
import asyncio
import functools
import re
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.evaluation.calibration import CONFIDENCE, RateCount
from pipelines.evaluation.line_reviews import frame_weight, in_review_sample
from serving.access import principal_of
from pipelines.decision_records import StoredDecision, StoredReview, iso_time, write_review
from serving.decisions import (_ERRORS, CLIENT_FIELD_PATTERN, RequestId, _read, _reader, _stored,
                               _timestamp, review_out)
from serving.errors import InspectionError
from serving.schemas import ErrorReply, EscapeReply, LineQualityReply, ReviewOut
from serving.upload import read_capped

MAX_BODY_BYTES = 16 * 1024  # a verdict, a few boxes and a note: far below this
BODY_TIMEOUT_S = 10.0
MAX_REGIONS = 32
MAX_NOTE_CHARS = 500
MAX_SIDE = 1 << 16
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # newlines and tabs are fine in a note, the rest is not

router = APIRouter(tags=["reviews"])


# -- request bodies -----------------------------------------------------------------------------------

class _Body(BaseModel):
    # strict: "3" is not 3 and "ok" is not "OK"; unknown fields are a client's mistake, said so
    model_config = ConfigDict(extra="forbid", strict=True)


class Box(_Body):
    x: int = Field(ge=0, lt=MAX_SIDE)
    y: int = Field(ge=0, lt=MAX_SIDE)
    width: int = Field(ge=1, le=MAX_SIDE)
    height: int = Field(ge=1, le=MAX_SIDE)


class _Noted(_Body):
    note: str | None = Field(None, max_length=MAX_NOTE_CHARS, description="free text for the record")

    @field_validator("note")
    @classmethod
    def clean_note(cls, note: str | None) -> str | None:
        if note is None:
            return None
        if _CONTROL.search(note):  # shown on the page and in exports: no terminal escapes or NULs
            raise ValueError("the note may not contain control characters")
        return note.strip() or None


class EscapeIn(_Noted):
    part_id: str = Field(pattern=CLIENT_FIELD_PATTERN, description="the part's id as its frame was posted")
    line: str | None = Field(None, pattern=CLIENT_FIELD_PATTERN, description="when part ids repeat across lines")


class ReviewIn(_Noted):
    verdict: Literal["OK", "NG"]
    regions: list[Box] = Field(default_factory=list, max_length=MAX_REGIONS,
                               description="the defect's boxes in frame pixels (NG only)")

    @model_validator(mode="after")
    def regions_only_for_ng(self) -> "ReviewIn":
        if self.verdict == "OK" and self.regions:
            raise ValueError("regions mark a defect: an OK verdict has none")
        return self


def body_schema(model: type[_Body]) -> dict:
    """``openapi_extra`` documenting a body the route reads itself (to cap its size): the model's JSON
    schema with its ``$defs`` inlined, since OpenAPI resolves references under components only."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        return [inline(item) for item in node] if isinstance(node, list) else node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


async def read_body(request: Request, model: type[_Body]) -> _Body:
    """The request's JSON body as ``model``: 415 unless JSON, 413 over the cap, 408 when too slow, 422
    when invalid (the message names each field and what is wrong, never echoes the input)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        raise InspectionError(415, "unsupported_content_type", "send the body as application/json")
    try:
        body = await asyncio.wait_for(read_capped(request, MAX_BODY_BYTES), BODY_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise InspectionError(408, "upload_too_slow",
                              f"the body did not arrive within {BODY_TIMEOUT_S:g} s") from None
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                             for e in exc.errors(include_input=False))
        raise InspectionError(422, "invalid_body", problems) from None


def check_regions(regions: list[Box], stored: StoredDecision) -> None:
    """Every box inside the frame the model judged (422 otherwise)."""
    width, height = stored.reply["image"]["width"], stored.reply["image"]["height"]
    for index, box in enumerate(regions):
        if box.x + box.width > width or box.y + box.height > height:
            raise InspectionError(422, "region_outside_frame",
                                  f"regions.{index} ({box.x},{box.y} {box.width}x{box.height}) does not fit in "
                                  f"the {width}x{height} frame")


def _reviewer(request: Request) -> tuple[str | None, str | None]:
    principal = principal_of(request)
    return (principal.key_id, principal.role) if principal is not None else (None, None)


async def _save(request: Request, stored: StoredDecision, review: StoredReview) -> dict:
    if not await _read(write_review, _reader(request).path, stored.seq, review):
        raise InspectionError(404, "unknown_request_id", f"decision {stored.request_id} left the log (retention)")
    return review_out(review)


# -- routes -------------------------------------------------------------------------------------------

_BODY_ERRORS = {**_ERRORS,
                409: {"model": ErrorReply, "description": "the decision cannot take it (e.g. its frame was not kept)"},
                413: {"model": ErrorReply, "description": f"a body over {MAX_BODY_BYTES} bytes"},
                415: {"model": ErrorReply, "description": "a body that is not application/json"}}


@router.post("/v1/decisions/{request_id}/review", response_model=ReviewOut, responses=_BODY_ERRORS,
             openapi_extra=body_schema(ReviewIn))
async def review_decision(request: Request, request_id: str = RequestId) -> dict:
    """An operator's verdict on a logged decision (replaces an earlier one)."""
    _reader(request)  # 404 before reading a body when there is no log
    body = await read_body(request, ReviewIn)
    stored = await _stored(request, request_id)
    if not stored.has_frame:  # the verdict must rest on the frame the model judged
        raise InspectionError(409, "frame_not_kept",
                              f"the frame of {request_id} was not kept (decision_log.frames), so there is nothing "
                              "to review; a defect found on the part is reported with POST /v1/escapes")
    check_regions(body.regions, stored)
    key_id, role = _reviewer(request)
    review = StoredReview("review", body.verdict, body.verdict == stored.decision,
                          [box.model_dump() for box in body.regions], body.note, key_id, role, time.time())
    return await _save(request, stored, review)


def escape_of(stored: StoredDecision, note: str | None, key_id: str | None, role: str | None,
              now: float) -> StoredReview:
    """The decision's verdict once a defect was found on its part. An operator's review keeps its
    place in the sample (source review), corrected; a decision nobody reviewed becomes an escape report,
    which line quality counts but does not extrapolate from (it was not chosen at random)."""
    earlier = stored.review
    if earlier is not None and earlier.source == "review":
        return replace(earlier, verdict="NG", agrees=False, escape_reported=True, note=note or earlier.note,
                       reviewer_key_id=key_id, reviewer_role=role, ts=now)
    return StoredReview("escape", "NG", False, [], note, key_id, role, now, escape_reported=True)


@router.post("/v1/escapes", response_model=EscapeReply, responses=_BODY_ERRORS, openapi_extra=body_schema(EscapeIn))
async def report_escape(request: Request) -> dict:
    """A defect found later down the line, on a part the endpoint passed."""
    reader = _reader(request)
    body = await read_body(request, EscapeIn)
    stored = await _read(functools.partial(reader.latest_for_part, body.part_id, body.line))
    if stored is None:
        where = f" on line {body.line}" if body.line else ""
        raise InspectionError(404, "unknown_part", f"no logged decision has part_id {body.part_id}{where}")
    if stored.decision != "OK":
        raise InspectionError(409, "part_was_rejected",
                              f"the newest decision on part {body.part_id} ({stored.request_id}) was NG: the "
                              "endpoint did not pass it; review that decision instead")
    review = escape_of(stored, body.note, *_reviewer(request), time.time())
    return {"request_id": stored.request_id, "review": await _save(request, stored, review)}


@router.get("/v1/line-quality", response_model=LineQualityReply, responses=_ERRORS)
async def get_line_quality(
    request: Request,
    line: str | None = Query(None, pattern=CLIENT_FIELD_PATTERN, description="one line (default: every line)"),
    since: datetime | None = Query(None, description="ISO 8601 (UTC if no zone is given), inclusive; default: "
                                                     "everything the log still holds"),
) -> dict:
    reader = _reader(request)
    start = _timestamp(since)
    reviewed = await _read(functools.partial(reader.reviewed, line=line, since=start))
    counts = await _read(reader.counts, start if start is not None else 0.0)
    decided: dict[str | None, dict[str, int]] = {}
    for counted_line, decision, count in counts:
        if line is None or counted_line == line:
            decided.setdefault(counted_line, {"OK": 0, "NG": 0})[decision] = count
    return {"since": iso_time(start) if start is not None else None, "confidence": CONFIDENCE,
            "lines": line_quality(decided, reviewed)}


# -- the estimate ---------------------------------------------------------------------------------------

# Two one-sided bounds (one per decision class) combine into the 95 % one (Bonferroni).
CLASS_CONFIDENCE = 1 - (1 - CONFIDENCE) / 2


@dataclass(frozen=True)
class Share:
    """The weighted share of one decision class's reviewed frames whose verdict differs from the model."""

    decisions: int  # the model's decisions of this class in range (the population)
    sample: RateCount  # wrong verdicts among the class's reviewed frames, weighted by 1/sampling rate

    @classmethod
    def of(cls, decisions: int, reviewed: list[StoredDecision]) -> "Share":
        # A frame kept with probability r stands for 1/r frames of its class (near-threshold frames are
        # kept at 1, the random sample at ok_sample_rate: weighting undoes the over-representation).
        return cls(decisions, RateCount.of([not row.review.agrees for row in reviewed],
                                           [frame_weight(row) for row in reviewed]))

    @property
    def reviewed(self) -> int:
        return self.sample.frames

    @property
    def rate(self) -> float | None:
        return self.sample.rate

    @property
    def upper(self) -> float | None:
        """One-sided upper bound at CLASS_CONFIDENCE (Clopper-Pearson on the effective counts)."""
        return self.sample.upper_at(CLASS_CONFIDENCE)

    def to_dict(self) -> dict:
        return {"decisions": self.decisions, "reviewed": self.reviewed, "wrong": self.rate, "upper": self.upper,
                "effective_reviews": self.sample.effective}


def _rates(ok_defective: float, ng_good: float, passed: int, rejected: int) -> tuple[float | None, float | None]:
    """(escape rate, overkill rate) of a line whose ``passed`` OK decisions hold a share ``ok_defective``
    of defective parts and whose ``rejected`` NG decisions a share ``ng_good`` of good ones."""
    escapes, overkills = passed * ok_defective, rejected * ng_good
    defective, good = escapes + rejected - overkills, overkills + passed - escapes
    return (escapes / defective if defective > 0 else None), (overkills / good if good > 0 else None)


def _estimate(rate: float | None, upper: float | None, note: str | None = None) -> dict:
    return {"rate": rate, "upper_95": upper, "note": note}


def quality_of(line: str | None, decided: dict[str, int], reviewed: list[StoredDecision]) -> dict:
    """One line's figures. Estimation (stratified by the model's decision):

    - within the OK decisions, the share ``p`` that is defective, and within the NG decisions the
      share ``q`` that is good, each from the reviewed frames of that class, weighted by 1/sampling rate;
    - with N_OK and N_NG the decisions in range: escapes = N_OK p, overkills = N_NG q, defective parts
      = escapes + N_NG (1 - q), good parts = overkills + N_OK (1 - p); the rates are their ratios;
    - both rates grow with p and with q, so the 95 % upper bounds put in the upper bounds of p and q,
      each one-sided at 97.5 % (Bonferroni), Clopper-Pearson on Kish's effective counts.

    It assumes operators review the kept frames of a class without preference (the review queue is in
    log order). Escapes reported on parts whose frame was not kept are counted, not estimated from.
    """
    sampled = [row for row in reviewed if in_review_sample(row)]
    passed = Share.of(decided.get("OK", 0), [row for row in sampled if row.decision == "OK"])
    rejected = Share.of(decided.get("NG", 0), [row for row in sampled if row.decision == "NG"])
    figures = {"line": line, "reviewed": len(reviewed), "passed": passed.to_dict(), "rejected": rejected.to_dict(),
               "reviewed_ok": sum(row.decision == "OK" for row in reviewed),
               "reviewed_ng": sum(row.decision == "NG" for row in reviewed),
               "disagreements": sum(not row.review.agrees for row in reviewed),
               "reported_escapes": sum(row.review.escape_reported for row in reviewed)}
    missing = [f"no reviewed {name} frame" for name, share in (("OK", passed), ("NG", rejected))
               if share.decisions and not share.reviewed]
    if missing:
        note = (f"{' and '.join(missing)} on this line: nothing to estimate from (with decision_log.frames: ng "
                "no OK frame is kept, so escapes cannot be seen; use frames: ng+sample)")
        return {**figures, "escape": _estimate(None, None, note), "overkill": _estimate(None, None, note)}
    escape, overkill = _rates(passed.rate or 0.0, rejected.rate or 0.0, passed.decisions, rejected.decisions)
    escape_up, overkill_up = _rates(passed.upper or 0.0, rejected.upper or 0.0, passed.decisions,
                                    rejected.decisions)
    return {**figures, "escape": _estimate(escape, escape_up), "overkill": _estimate(overkill, overkill_up)}


def line_quality(decided: dict[str | None, dict[str, int]], reviewed: list[StoredDecision]) -> list[dict]:
    """Every line with decisions in range, in name order (frames posted without a line last)."""
    by_line: dict[str | None, list[StoredDecision]] = {line: [] for line in decided}
    for row in reviewed:
        by_line.setdefault(row.line, []).append(row)
    order = sorted(by_line, key=lambda line: (line is None, line or ""))
    return [quality_of(line, decided.get(line, {}), by_line[line]) for line in order]
