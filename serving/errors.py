"""The one error type the HTTP layer turns into a 4xx (or 503) JSON answer."""

from __future__ import annotations


class InspectionError(ValueError):
    """A request the service refuses, with the HTTP status and a machine-readable code.

    The message says what is wrong in words a line engineer can act on.
    """

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}  # e.g. Retry-After on a 503

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


def error_response(status: int, code: str, message: str, request_id: str,
                   headers: dict[str, str] | None = None):
    """The JSON error every refusal gets: ``{"request_id", "error": {code, message}}``."""
    from starlette.responses import JSONResponse

    return JSONResponse(status_code=status, headers=headers,
                        content={"request_id": request_id, "error": {"code": code, "message": message}})
