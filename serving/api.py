"""The HTTP ingress: FastAPI routes in front of the model deployment.

``POST /v1/inspect`` decodes and validates a frame, cuts it into model tiles, sends
every tile to the model deployment (which batches them), stitches the probabilities and
answers with the verdict. Bad input is answered with a 4xx JSON ``{"error": {code,
message}}`` and never reaches the model.
"""

# No `from __future__ import annotations`: FastAPI must see real types in the route
# signatures that serve.ingress rebuilds.
import asyncio
import time
import uuid

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from serving.config import ServingConfig
from serving.decoding import SUPPORTED_FORMATS, decode_frame
from serving.errors import InspectionError
from serving.postprocess import judge, mask_to_png_base64
from serving.tiling import TileGrid
from serving.upload import read_frame_bytes

api = FastAPI(
    title="JAFFNet defect inspection",
    description=f"Post one frame ({', '.join(SUPPORTED_FORMATS)}; grayscale or colour) to /v1/inspect.",
)


def _error(status: int, code: str, message: str, request: Request) -> JSONResponse:
    return JSONResponse(status_code=status,
                        content={"request_id": _request_id(request), "error": {"code": code, "message": message}})


@api.exception_handler(InspectionError)
async def _inspection_error(request: Request, exc: InspectionError) -> JSONResponse:
    return _error(exc.status, exc.code, exc.message, request)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return _error(422, "invalid_parameter", problems, request)


def _request_id(request: Request) -> str:
    # Serve's proxy puts an x-request-id on every request and echoes it in the response.
    return request.headers.get("x-request-id") or uuid.uuid4().hex


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


@serve.deployment(max_ongoing_requests=64)
@serve.ingress(api)
class InspectionAPI:
    def __init__(self, model: DeploymentHandle, config: dict):
        self.model = model
        self.settings = ServingConfig(**config)
        self._card: dict | None = None

    async def card(self) -> dict:
        """The model deployment's card (name, version, threshold, input size...), fetched once."""
        if self._card is None:
            self._card = await self.model.info.remote()
        return self._card

    @api.post("/v1/inspect")
    async def inspect(
        self,
        request: Request,
        mask: bool = Query(False, description="include the defect mask as a base64 PNG"),
        threshold: float | None = Query(None, ge=0, le=1, description="override the model's threshold"),
    ) -> dict:
        started = time.perf_counter()
        request_id = _request_id(request)
        card = await self.card()
        settings = self.settings

        data, declared_format = await read_frame_bytes(request, settings.max_body_bytes)
        decode_start = time.perf_counter()
        frame = await asyncio.to_thread(decode_frame, data, declared_format, settings.max_pixels)
        del data
        size = card["image_size"]
        grid = TileGrid.plan(frame.height, frame.width, size, settings.tile_overlap_px(size))
        tiles = grid.split(frame.rgb)
        decode_ms = _ms(decode_start)

        inference_start = time.perf_counter()
        results = await asyncio.gather(*(self.model.predict_tile.remote(tile) for tile in tiles))
        inference_ms = _ms(inference_start)

        post_start = time.perf_counter()
        probability = grid.stitch([r["probability"] for r in results], settings.stitch)
        used_threshold = card["threshold"] if threshold is None else threshold
        verdict = await asyncio.to_thread(judge, probability, used_threshold, settings.max_regions)
        mask_png = await asyncio.to_thread(mask_to_png_base64, verdict.mask) if mask else None
        postprocess_ms = _ms(post_start)

        response = {
            "request_id": request_id,
            "model": {"name": card["name"], "version": card["version"], "run_id": card["run_id"]},
            "decision": verdict.decision,
            "defect_score": round(verdict.defect_score, 6),
            "threshold": verdict.threshold,
            "defect_area_px": verdict.defect_area_px,
            "defect_area_ratio": verdict.defect_area_ratio,
            "region_count": verdict.region_count,
            "regions": [region.to_dict() for region in verdict.regions],
            "image": {"width": frame.width, "height": frame.height, "channels": frame.channels,
                      "bit_depth": frame.bit_depth, "format": frame.format},
            "tiles": len(grid),
            "max_batch_size_seen": max(int(r["batch_size"]) for r in results),
            "timings_ms": {"decode": decode_ms, "inference": inference_ms, "postprocess": postprocess_ms,
                           "total": _ms(started)},
        }
        if mask_png is not None:
            response["mask_png_base64"] = mask_png
        return response

    @api.get("/v1/model")
    async def model_info(self) -> dict:
        card = await self.card()
        size = card["image_size"]
        return {
            **card,
            "tiling": {"tile": size, "overlap_px": self.settings.tile_overlap_px(size), "stitch": self.settings.stitch},
            "limits": {"max_body_bytes": self.settings.max_body_bytes, "max_pixels": self.settings.max_pixels,
                       "formats": list(SUPPORTED_FORMATS)},
        }

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        try:
            card = await asyncio.wait_for(self.model.info.remote(), timeout=5)
        except Exception as exc:  # any failure to reach the model replica means "not ready"
            return JSONResponse(status_code=503, content={"status": "unavailable", "reason": str(exc)[:500]})
        return JSONResponse({"status": "ok", "model": {"name": card["name"], "version": card["version"]}})
