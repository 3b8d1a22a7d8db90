"""The frame's bytes out of an HTTP request: multipart (field ``file``) or a raw body.

The body is read in chunks and refused with 413 as soon as it passes the cap (a
declared ``Content-Length`` above the cap is refused before reading anything), so an
oversized upload never sits whole in a replica's memory; a body still arriving after
the upload time-out is refused with 408, so slow senders cannot hold the ingress.
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from serving.decoding import format_for_content_type
from serving.errors import InspectionError

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file
FILE_FIELD = "file"


def _too_large(limit: int) -> InspectionError:
    return InspectionError(413, "body_too_large", f"the upload is larger than the limit of {limit} bytes")


async def read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _replay(request: Request, body: bytes) -> Request:
    """A copy of ``request`` whose body is the bytes already read (for the form parser)."""
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)


async def read_frame_bytes(request: Request, max_body_bytes: int,
                           timeout_s: float | None = None) -> tuple[bytes, str | None]:
    """(image bytes, the format their content type declares or None for generic bytes),
    within ``timeout_s`` seconds (else 408)."""
    try:
        return await asyncio.wait_for(_read_frame_bytes(request, max_body_bytes), timeout_s)
    except asyncio.TimeoutError:
        raise InspectionError(408, "upload_too_slow",
                              f"the body did not arrive within the upload time-out of {timeout_s:g} s") from None


async def _read_frame_bytes(request: Request, max_body_bytes: int) -> tuple[bytes, str | None]:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "multipart/form-data":
        declared = format_for_content_type(content_type)  # 415 before reading the body
        return await read_capped(request, max_body_bytes), declared

    body = await read_capped(request, max_body_bytes + MULTIPART_OVERHEAD)
    try:
        form = await _replay(request, body).form(max_files=1, max_fields=8)
    except (HTTPException, MultiPartException) as exc:  # a malformed multipart body
        detail = getattr(exc, "detail", None) or getattr(exc, "message", str(exc))
        raise InspectionError(400, "bad_multipart", f"the multipart body cannot be parsed: {detail}") from exc
    try:
        upload = form.get(FILE_FIELD)
        if upload is None or isinstance(upload, str):
            raise InspectionError(400, "missing_file", f"the multipart body has no file field named {FILE_FIELD!r}")
        data = await upload.read()
        if len(data) > max_body_bytes:
            raise _too_large(max_body_bytes)
        return data, format_for_content_type(upload.content_type or "")
    finally:
        await form.close()
