"""The operator page at ``/``: a shop-floor screen over the decision log's read API.

Plain HTML, CSS and JavaScript bundled with the package (``serving/static/operator``):
nothing is fetched from another host, so the page works on an isolated line network. The
page polls ``/v1/model``, ``/v1/decision-counts`` and ``/v1/decisions``; the Content
Security Policy allows this origin only, and the page builds its DOM from text (no HTML
from data). With keys, ``/signin`` takes an operator key once and ``POST /v1/session``
turns it into a signed session cookie (``serving.access``): ``<img src>`` cannot send a header.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at runtime.
import html
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

STATIC = resources.files("serving") / "static" / "operator"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "signin.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

router = APIRouter(include_in_schema=False)


def _read(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _page(name: str, request: Request) -> HTMLResponse:
    # The app may sit under a route prefix (Serve's root_path): links are built on it.
    base = html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)
    access = getattr(request.app.state, "access", None)
    signed = "keys" if access is not None and access.keys is not None else "open"
    return HTMLResponse(_read(name).replace("{{BASE}}", base).replace("{{AUTH}}", signed),
                        headers=SECURITY_HEADERS)


@router.get("/", response_class=HTMLResponse)
async def operator_page(request: Request) -> HTMLResponse:
    return _page("index.html", request)


@router.get("/signin", response_class=HTMLResponse)
async def sign_in_page(request: Request) -> HTMLResponse:
    return _page("signin.html", request)


@router.get("/favicon.ico")
async def no_favicon() -> Response:
    return Response(status_code=204)  # browsers ask for it; an empty answer keeps their consoles clean


def _asset_route(name: str, media_type: str) -> None:
    async def asset() -> Response:
        return Response(_read(name), media_type=media_type, headers=SECURITY_HEADERS)

    router.add_api_route(f"/operator/{name}", asset, methods=["GET"], name=f"operator_{name}")


for _name, _media_type in ASSETS.items():  # fixed names only: no path from the request touches the disk
    _asset_route(_name, _media_type)
