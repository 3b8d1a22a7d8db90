"""The HTTP ingress: FastAPI routes in front of the model deployment.

``POST /v1/inspect`` decodes and validates a frame, turns it into model inputs through
the model's input contract (``jaffnet.frames``: resized, or cut into native tiles),
sends every input to the model deployment (which batches them), merges the
probabilities back to the frame's size and applies the model's calibrated decision rule
(``jaffnet.decision``): the same path evaluation scored. Bad input is answered with a
4xx JSON ``{"error": {code, message}}`` and never reaches the model. Every request first
passes the access layer (``serving.access``: keys, roles, limits, Host and Origin checks).
"""

# No `from __future__ import annotations`: FastAPI must see real types in the route
# signatures that serve.ingress rebuilds.
import asyncio
import time
from pathlib import PurePath

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from jaffnet.contract import InputContract
from jaffnet.decision import DecisionRule, judge
from jaffnet.frames import plan_frame
from serving.access import Access, AccessMiddleware, client_request_id_of, principal_of, request_id_of
from serving.access import router as session_router
from serving.admission import InputBudget
from serving.config import ServingConfig
from serving.decisions import ClientFields, DecisionRecorder, client_fields
from serving.decisions import router as decisions_router
from serving.decoding import SUPPORTED_FORMATS, decode_frame
from serving.errors import InspectionError, error_response
from serving.metrics import InspectionMetrics
from serving.operator_page import router as operator_page_router
from serving.postprocess import encode_probability, mask_to_png_base64
from serving.reviews import router as reviews_router
from serving.schemas import INSPECT_ERRORS, Health, InspectionReply, ModelCard
from serving.upload import read_frame_bytes

api = FastAPI(
    title="JAFFNet defect inspection",
    description=f"Post one frame ({', '.join(SUPPORTED_FORMATS)}; grayscale or colour) to /v1/inspect.",
)
api.include_router(decisions_router)  # GET /v1/decisions... (serving.decisions)
api.include_router(reviews_router)  # reviews and the line's quality (serving.reviews)
api.include_router(operator_page_router)  # the operator page at / (serving.operator_page)
api.include_router(session_router)  # the page's sign-in and sign-out (serving.access)
api.add_middleware(AccessMiddleware)  # before every route: who, which route, how often (serving.access)


def _error(status: int, code: str, message: str, request: Request,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return error_response(status, code, message, request_id_of(request), headers)


@api.exception_handler(InspectionError)
async def _inspection_error(request: Request, exc: InspectionError) -> JSONResponse:
    return _error(exc.status, exc.code, exc.message, request, exc.headers)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return _error(422, "invalid_parameter", problems, request)


def public_card(card: dict) -> dict:
    """The model card as clients see it: a local model directory by its name only (no server paths)."""
    source = card.get("source")
    if source and not source.startswith(("models:/", "runs:/")):
        card = {**card, "source": f"local:{PurePath(source).name}"}
    return card


HEALTH_TIMEOUT_S = 0.5
BUSY_IS_HEALTHY_S = 60.0


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


@serve.deployment(max_ongoing_requests=64)
@serve.ingress(api)
class InspectionAPI:
    def __init__(self, model: DeploymentHandle, config: dict):
        self.model = model
        self.settings = ServingConfig(**config)
        self._card: dict | None = None
        self._contract: InputContract | None = None
        self._rule: DecisionRule | None = None
        self._last_model_answer = 0.0  # monotonic time the model deployment last answered
        self.budget = InputBudget(self.settings.max_inputs_in_flight)
        self.decisions = DecisionRecorder(self.settings.decision_log, api, InspectionMetrics())
        self.access = api.state.access = Access(self.settings.access, self.settings.decision_log)

    def __del__(self):  # Serve calls it when the replica stops: commit what is still queued
        for part in ("decisions", "access"):
            if getattr(self, part, None) is not None:
                getattr(self, part).close()

    async def card(self) -> dict:
        """The model deployment's card (name, version, contract, rule...), fetched once."""
        if self._card is None:
            try:
                card = await self.model.info.remote()
            except BackPressureError as exc:
                raise self._overloaded() from exc
            self._contract = InputContract.from_dict(card["contract"])
            self._rule = DecisionRule.from_dict(card["rule"])
            self._card = card
        return self._card

    def _admit(self, width: int, height: int) -> None:
        """Refuse, from the header alone, a frame whose work would be unbounded: a side
        thinner than ``min_frame_side`` or more model inputs than ``max_inputs_per_frame``."""
        settings = self.settings
        if min(width, height) < settings.min_frame_side:
            raise InspectionError(413, "frame_too_thin",
                                  f"the frame is {width}x{height}: a side is below min_frame_side "
                                  f"{settings.min_frame_side} px")
        inputs = len(plan_frame(self._contract, height, width))
        if inputs > settings.max_inputs_per_frame:
            raise InspectionError(413, "too_many_inputs",
                                  f"the frame is {width}x{height}, which needs {inputs} model inputs "
                                  f"({self._contract.describe()}), above max_inputs_per_frame "
                                  f"{settings.max_inputs_per_frame}")
        if not self.budget.fits(inputs):
            raise self._overloaded()  # refused before decoding; _predict reserves for real

    def _overloaded(self) -> InspectionError:
        return InspectionError(503, "overloaded", "the model is busy with other frames; retry later",
                               headers={"Retry-After": str(self.settings.retry_after_s)})

    async def _predict(self, inputs: list) -> list[dict]:
        """Every input through the model deployment, within the ingress's input budget
        (serving.admission). Over budget, or a full model queue, is a 503 with Retry-After,
        and the inputs already sent are cancelled. If the client goes away, Serve cancels
        this request and (Ray 2.60) the calls it made; cancelling them here as well keeps
        that true whatever the Serve version."""
        if not self.budget.reserve(len(inputs)):
            raise self._overloaded()
        responses = []
        try:
            for x in inputs:
                responses.append(self.model.predict_input.remote(x))
            results = await asyncio.gather(*responses)
        except (asyncio.CancelledError, BackPressureError) as exc:
            for response in responses:
                response.cancel()
            if isinstance(exc, BackPressureError):
                raise self._overloaded() from exc
            raise
        finally:
            self.budget.release(len(inputs))
        self._last_model_answer = time.monotonic()
        return results

    @api.post("/v1/inspect", response_model=InspectionReply, response_model_exclude_unset=True,
              responses=INSPECT_ERRORS)
    async def inspect(
        self,
        request: Request,
        mask: bool = Query(False, description="include the defect mask (pixels >= threshold) as a base64 PNG"),
        probability: bool = Query(False, description="include the probability map (exact float32, "
                                                     "zlib + base64: see serving.postprocess)"),
        threshold: float | None = Query(None, ge=0, le=1, description="override the model's pixel threshold "
                                                                      "(mask, regions, min_defect_area_px)"),
        image_threshold: float | None = Query(None, ge=0, le=1, description="override the model's image "
                                                                            "threshold (OK/NG)"),
        client: ClientFields = Depends(client_fields),
    ) -> dict:
        started = time.perf_counter()
        request_id = request_id_of(request)
        principal = principal_of(request)
        if principal is not None and principal.line is not None and client.line is None:
            client = ClientFields(principal.line, client.station, client.part_id)  # a line key's frames are its line's
        card = await self.card()
        settings = self.settings
        rule = self._rule.with_overrides(threshold, image_threshold)
        if self.budget.full:  # refused before the body is even read: overload must stay cheap
            raise self._overloaded()

        data, declared_format = await read_frame_bytes(request, settings.max_body_bytes, settings.upload_timeout_s)
        decode_start = time.perf_counter()
        frame = await asyncio.to_thread(decode_frame, data, declared_format, settings.max_pixels, self._admit,
                                        settings.bit_depth)
        del data
        plan = plan_frame(self._contract, frame.height, frame.width)
        inputs = await asyncio.to_thread(plan.split, frame.rgb)
        decode_ms = _ms(decode_start)

        inference_start = time.perf_counter()
        results = await self._predict(inputs)
        inference_ms = _ms(inference_start)

        post_start = time.perf_counter()
        probability_map = await asyncio.to_thread(plan.merge, [r["probability"] for r in results])
        verdict = await asyncio.to_thread(judge, probability_map, rule, settings.max_regions)
        mask_png = await asyncio.to_thread(mask_to_png_base64, verdict.mask) if mask else None
        probability_out = await asyncio.to_thread(encode_probability, probability_map) if probability else None
        postprocess_ms = _ms(post_start)

        response = {
            "request_id": request_id,
            "model": {"name": card["name"], "version": card["version"], "run_id": card["run_id"]},
            "decision": verdict.decision,
            "reason": verdict.reason,
            "image_score": verdict.image_score,
            "image_threshold": rule.image_threshold,
            "min_defect_area_px": rule.min_defect_area_px,
            "threshold": rule.pixel_threshold,
            "defect_score": round(verdict.defect_score, 6),
            "defect_area_px": verdict.defect_area_px,
            "defect_area_ratio": verdict.defect_area_ratio,
            "largest_region_px": verdict.largest_region_px,
            "region_count": verdict.region_count,
            "regions": [region.to_dict() for region in verdict.regions],
            "image": {"width": frame.width, "height": frame.height, "channels": frame.channels,
                      "bit_depth": frame.bit_depth, "significant_bits": frame.significant_bits,
                      "bits_source": frame.bits_source, "format": frame.format},
            "input": {"mode": self._contract.mode, "image_size": self._contract.image_size, "count": len(plan)},
            "tiles": len(plan),
            "max_batch_size_seen": max(int(r["batch_size"]) for r in results),
            "timings_ms": {"decode": decode_ms, "inference": inference_ms, "postprocess": postprocess_ms,
                           "total": _ms(started)},
        }
        if mask_png is not None:
            response["mask_png_base64"] = mask_png
        if probability_out is not None:
            response["probability_map"] = probability_out
        response.update(client.echo())
        if client_request_id_of(request) is not None:
            response["client_request_id"] = client_request_id_of(request)
        response["decision_log"] = await self.decisions.record(response, frame.pixels, verdict.mask)
        return response

    @api.get("/v1/model", response_model=ModelCard)
    async def model_info(self) -> dict:
        card = public_card(await self.card())
        settings = self.settings
        return {
            **card,
            "limits": {"max_body_bytes": settings.max_body_bytes, "max_pixels": settings.max_pixels,
                       "formats": list(SUPPORTED_FORMATS), "max_inputs_per_frame": settings.max_inputs_per_frame,
                       "min_frame_side": settings.min_frame_side, "max_inputs_in_flight": settings.max_inputs_in_flight,
                       "upload_timeout_s": settings.upload_timeout_s},
        }

    @api.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "not ready"}})
    async def healthz(self) -> JSONResponse:
        """200 within a second under any load: the model replica answers its card, or it is
        busy with frames (some in flight, or one answered within the last minute); else 503."""
        try:
            card = await asyncio.wait_for(self.model.info.remote(), timeout=HEALTH_TIMEOUT_S)
        except Exception as exc:  # timed out behind queued inputs, or the replica is unreachable
            recent = time.monotonic() - self._last_model_answer < BUSY_IS_HEALTHY_S
            if self._card is not None and (self.budget.in_flight or recent):
                card = self._card
                return JSONResponse({"status": "busy", "model": {"name": card["name"], "version": card["version"]}})
            return JSONResponse(status_code=503, content={"status": "unavailable",
                                                          "reason": type(exc).__name__})
        return JSONResponse({"status": "ok", "model": {"name": card["name"], "version": card["version"]}})
