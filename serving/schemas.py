"""The HTTP API's reply types, so ``/docs`` and ``/openapi.json`` describe every field and
status code. The routes build plain dicts; FastAPI checks them against these models."""

# No `from __future__ import annotations`: FastAPI/pydantic read these annotations at runtime.
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Reply(BaseModel):
    model_config = ConfigDict(protected_namespaces=(), extra="forbid")


class ModelRef(_Reply):
    name: str
    version: str
    run_id: str | None = Field(None, description="the MLflow run that produced the version")


class BBox(_Reply):
    x: int
    y: int
    width: int
    height: int


class RegionOut(_Reply):
    bbox: BBox
    area_px: int = Field(description="pixels at or above the pixel threshold")
    max_probability: float


class ImageInfo(_Reply):
    width: int
    height: int
    channels: int = Field(description="as stored: 1 grey, 2 grey+alpha, 3 colour, 4 colour+alpha")
    bit_depth: int = Field(description="as stored: 8 or 16")
    significant_bits: int = Field(description="bits of a sample that carry the signal (12 for a 12-bit camera)")
    bits_source: Literal["8-bit", "file", "setting", "inferred"]
    format: str


class InputInfo(_Reply):
    mode: Literal["resize", "tile"]
    image_size: int
    count: int = Field(description="model inputs this frame became")


class Timings(_Reply):
    decode: float
    inference: float
    postprocess: float
    total: float


class ProbabilityMap(_Reply):
    encoding: Literal["float32-le+zlib+base64"]
    height: int
    width: int
    data: str


class LogStatus(_Reply):
    status: Literal["logged", "queued", "not_logged", "off"] = Field(
        description="logged: on disk before this reply was sent; queued: handed to the log's writer, not yet "
                    "confirmed; not_logged: not in the log (reason says why); off: no decision log configured")
    reason: str | None = None


class InspectionReply(_Reply):
    request_id: str = Field(description="made by the service, unique: the decision log's key")
    client_request_id: str | None = Field(None, description="the x-request-id Serve's proxy logged the request "
                                                            "under: the client's own when it sent one")
    model: ModelRef
    decision: Literal["OK", "NG"]
    reason: str = Field(description="the comparison that decided")
    image_score: float = Field(description="smoothed max of the probability map (3x3 box mean)")
    image_threshold: float
    min_defect_area_px: int
    threshold: float = Field(description="pixel threshold: draws the mask and the regions")
    defect_score: float = Field(description="highest pixel probability")
    defect_area_px: int
    defect_area_ratio: float
    largest_region_px: int
    region_count: int
    regions: list[RegionOut] = Field(description="8-connected, largest first, at most max_regions")
    image: ImageInfo
    input: InputInfo
    tiles: int
    max_batch_size_seen: int
    timings_ms: Timings
    mask_png_base64: str | None = Field(None, description="with ?mask=true")
    probability_map: ProbabilityMap | None = Field(None, description="with ?probability=true")
    line: str | None = Field(None, description="the client's ?line=, echoed")
    station: str | None = Field(None, description="the client's ?station=, echoed")
    part_id: str | None = Field(None, description="the client's ?part_id=, echoed")
    decision_log: LogStatus | None = Field(None, description="whether this decision is in the decision log")


class ErrorDetail(_Reply):
    code: str = Field(description="machine-readable, e.g. too_many_inputs, overloaded, corrupt_image")
    message: str


class ErrorReply(_Reply):
    request_id: str
    error: ErrorDetail


class Limits(_Reply):
    max_body_bytes: int
    max_pixels: int
    formats: list[str]
    max_inputs_per_frame: int
    min_frame_side: int
    max_inputs_in_flight: int
    upload_timeout_s: float


class ModelCard(BaseModel):
    """The serving model version: contract, rule, metrics and where it runs (open for extra keys)."""

    model_config = ConfigDict(protected_namespaces=(), extra="allow")
    name: str
    version: str
    run_id: str | None = None
    source: str | None = None
    contract: dict[str, Any]
    rule: dict[str, Any]
    threshold: float
    image_size: int
    metrics: dict[str, Any] = Field(default_factory=dict)
    backend: str
    device: str
    limits: Limits


class Health(_Reply):
    status: Literal["ok", "busy", "unavailable"]
    model: ModelRef | None = None
    reason: str | None = None


INSPECT_ERRORS = {
    400: {"model": ErrorReply, "description": "empty body, not an image, truncated/corrupt, bad multipart"},
    408: {"model": ErrorReply, "description": "the body arrived slower than upload_timeout_s (upload_too_slow); "
                                              "without a JSON body: Serve's proxy, past request_timeout_s"},
    413: {"model": ErrorReply, "description": "body, pixels, thin side or model inputs above the limits"},
    415: {"model": ErrorReply, "description": "unsupported format or content type"},
    422: {"model": ErrorReply, "description": "a query parameter out of range"},
    503: {"model": ErrorReply, "description": "overloaded (model queue full; Retry-After says when to retry)"},
}


# -- the decision log's read API (serving.decisions) ----------------------------------------------

class DecisionLinks(_Reply):
    self: str
    frame_png: str | None = Field(None, description="the frame as judged (8-bit); null when not kept")
    mask_png: str | None = None
    overlay_png: str | None = Field(None, description="frame + mask + region boxes; ?max_side= to shrink")


class Reviewer(_Reply):
    key_id: str | None = Field(description="the key's public id (never the key); null: a service without keys")
    role: str | None


class ReviewOut(_Reply):
    source: Literal["review", "escape"] = Field(description="review: an operator judged the frame; escape: a "
                                                            "defect found later on the part this decision passed")
    verdict: Literal["OK", "NG"] = Field(description="the truth as the operator (or the escape report) says")
    agrees: bool = Field(description="the verdict is the model's decision")
    regions: list[BBox] = Field(description="the defect's boxes as the operator drew them (NG only)")
    note: str | None = None
    escape_reported: bool = Field(description="a defect was found on the part later down the line (POST /v1/escapes)")
    reviewer: Reviewer
    time: str = Field(description="ISO 8601, UTC")


class Kept(_Reply):
    reason: Literal["ng", "all", "near_threshold", "sample"] = Field(description="why the frame was kept")
    sample_rate: float = Field(description="the probability it had of being kept (1 but for the random OK sample)")


class DecisionSummary(_Reply):
    request_id: str
    time: str = Field(description="ISO 8601, UTC")
    line: str | None = None
    station: str | None = None
    part_id: str | None = None
    model: ModelRef
    decision: Literal["OK", "NG"]
    image_score: float
    image_threshold: float
    region_count: int
    links: DecisionLinks
    kept: Kept | None = Field(None, description="why the frame was kept; null: not kept, or logged before "
                                                "kept frames said why")
    review: ReviewOut | None = Field(None, description="null: not reviewed")


class DecisionPage(_Reply):
    items: list[DecisionSummary] = Field(description="newest first")
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next (older) page")


class DecisionDetail(DecisionSummary):
    reason: str
    threshold: float
    min_defect_area_px: int
    defect_score: float
    defect_area_px: int
    largest_region_px: int
    regions: list[RegionOut]
    image: ImageInfo
    timings_ms: Timings


class LineCounts(_Reply):
    line: str | None = Field(description="null: frames posted without ?line=")
    ok: int
    ng: int


class DecisionCounts(_Reply):
    since: str = Field(description="ISO 8601, UTC")
    window_s: int
    lines: list[LineCounts]


# -- reviews and the line's quality (serving.reviews) -------------------------------------------------

class RateEstimate(_Reply):
    rate: float | None = Field(description="sampling-weighted estimate; null when the reviews cannot support one "
                                           "(note says why)")
    upper_95: float | None = Field(description="one-sided 95 % upper bound")
    note: str | None = None


class ClassShare(_Reply):
    decisions: int = Field(description="the model's decisions of this class on the line in range")
    reviewed: int = Field(description="of them, reviewed by an operator (the sample)")
    wrong: float | None = Field(description="weighted share of the reviewed whose verdict differs (OK decisions: "
                                            "defective parts passed; NG decisions: good parts rejected)")
    upper: float | None = Field(description="one-sided 97.5 % upper bound of that share (two make the 95 % of "
                                            "the rates)")
    effective_reviews: float = Field(description="Kish effective sample size of the weighted reviews")


class LineQuality(_Reply):
    line: str | None = Field(description="null: frames posted without ?line=")
    reviewed: int = Field(description="decisions with a verdict (operator reviews and escape reports)")
    reviewed_ok: int = Field(description="of them, decided OK by the model")
    reviewed_ng: int = Field(description="of them, decided NG by the model")
    disagreements: int
    reported_escapes: int = Field(description="defects found later down the line (POST /v1/escapes)")
    passed: ClassShare = Field(description="the model's OK decisions")
    rejected: ClassShare = Field(description="the model's NG decisions")
    escape: RateEstimate = Field(description="defective parts the model passed, of all defective parts")
    overkill: RateEstimate = Field(description="good parts the model rejected, of all good parts")


class LineQualityReply(_Reply):
    since: str | None = Field(description="ISO 8601, UTC; null: everything the log still holds")
    confidence: float
    lines: list[LineQuality]


class EscapeReply(_Reply):
    request_id: str = Field(description="the decision that passed the part")
    review: ReviewOut
