"""Access control of the HTTP API: keys and roles, the operator page's session, limits per
key, the Host allowlist, the Origin check and the audit log.

Every request passes :class:`AccessMiddleware` (pure ASGI, on the ingress's app) before any
route runs, so a refusal reads no body and never reaches the model:

1. the ``Host`` header must be in ``allowed_hosts`` (DNS rebinding), else 400;
2. the route (method + template) must be in :data:`ROUTES`, else 403: a route nobody listed
   is nobody's;
3. no key in the query string (400); a client ``x-request-id`` must be well formed (422);
4. a state-changing method with an ``Origin`` (browsers send one) must come from this host
   or ``allowed_origins``, else 403 (CSRF);
5. who: ``Authorization: Bearer <key>`` or, on the GET routes the operator page loads, the
   signed session cookie; else 401 (the page itself redirects to its sign-in page);
6. the key's role must be one of the route's, else 403; a ``line`` key posts for its own
   line only and without threshold overrides (403);
7. the key's limits (the ``limits`` library, moving windows, per ingress replica): 429 with
   ``Retry-After``.

Without a keys file every route is open, as before, to loopback clients only (403 for the
others): ``jaffnet serve`` refuses to bind another address without one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import math
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers, QueryParams
from starlette.routing import compile_path

from serving.audit_log import AuditEntry, AuditLog
from pipelines.decision_records import valid_request_id
from serving.decision_log import DecisionLogSettings
from serving.errors import error_response
from serving.keys import ApiKey, KeyStore

logger = logging.getLogger("ray.serve")

LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1"]
SESSION_COOKIE = "jaffnet_session"
# Query parameter names that can only be a credential: refused, with any value that is a key.
_CREDENTIAL_NAMES = {"key", "api_key", "apikey", "token", "access_token", "auth", "authorization", "bearer"}
_KEY_IN_TEXT = re.compile(r"jk_[0-9a-f]{12}")
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
PRINCIPAL, REQUEST_ID, CLIENT_REQUEST_ID = "jaffnet.principal", "jaffnet.request_id", "jaffnet.client_request_id"


class AccessSettings(BaseModel):
    """The ``access:`` section of the serving config."""

    model_config = ConfigDict(extra="forbid")

    keys_file: str | None = Field(None, description="serving.keys file; null: open, to loopback clients only")
    allowed_hosts: list[str] = Field(default_factory=lambda: list(LOOPBACK_HOSTS),
                                     description="Host header names served ('*.example.com' for a domain, '*' any)")
    allowed_origins: list[str] = Field(default_factory=list, description="other origins whose pages may post "
                                                                         "(the service's own always may)")
    requests_per_s: int = Field(50, ge=1, le=100_000, description="requests per second per key")
    image_reads_per_min: int = Field(600, ge=1, le=1_000_000, description="frame/mask/overlay reads per "
                                                                          "minute per key")
    session_hours: float = Field(12.0, gt=0, le=24 * 31, description="an operator page sign-in lasts this long")
    secure_cookie: bool | None = Field(None, description="Secure session cookie; null: when the request is https")


# -- the route table ------------------------------------------------------------------------------

READERS = frozenset({"operator", "admin"})
ANY_KEY = frozenset({"line", "operator", "admin"})
PUBLIC = frozenset()


@dataclass(frozen=True)
class Rule:
    roles: frozenset[str]  # empty: public
    cookie: bool = False  # the operator page's session may be used (its GETs, <img src> included, and reviews)
    image_read: bool = False  # counts against image_reads_per_min
    page: bool = False  # a browser without credentials is sent to the sign-in page
    audit: bool = True  # public static files and /healthz are not audited (no data, polled often)


ROUTES: dict[tuple[str, str], Rule] = {
    ("GET", "/healthz"): Rule(PUBLIC, audit=False),
    ("POST", "/v1/inspect"): Rule(frozenset({"line", "admin"})),
    ("GET", "/v1/model"): Rule(READERS, cookie=True),
    ("GET", "/v1/decisions"): Rule(READERS, cookie=True),
    ("GET", "/v1/decision-counts"): Rule(READERS, cookie=True),
    ("GET", "/v1/decisions/{request_id}"): Rule(READERS, cookie=True),
    ("GET", "/v1/decisions/{request_id}/frame.png"): Rule(READERS, cookie=True, image_read=True),
    ("GET", "/v1/decisions/{request_id}/mask.png"): Rule(READERS, cookie=True, image_read=True),
    ("GET", "/v1/decisions/{request_id}/overlay.png"): Rule(READERS, cookie=True, image_read=True),
    # The page's review queue posts with its session: SameSite=Strict, the Origin check and the JSON-only
    # body (no cross-site form can send one) keep other sites' pages out.
    ("POST", "/v1/decisions/{request_id}/review"): Rule(READERS, cookie=True),
    ("POST", "/v1/escapes"): Rule(READERS, cookie=True),
    ("GET", "/v1/line-quality"): Rule(READERS, cookie=True),
    ("GET", "/"): Rule(READERS, cookie=True, page=True),
    ("POST", "/v1/session"): Rule(READERS),  # sign in: the key in the header, a cookie back
    ("DELETE", "/v1/session"): Rule(PUBLIC),  # sign out: clears the cookie, reveals nothing
    ("GET", "/signin"): Rule(PUBLIC, audit=False),
    ("GET", "/operator/app.js"): Rule(PUBLIC, audit=False),
    ("GET", "/operator/signin.js"): Rule(PUBLIC, audit=False),
    ("GET", "/operator/style.css"): Rule(PUBLIC, audit=False),
    ("GET", "/favicon.ico"): Rule(PUBLIC, audit=False),
    ("GET", "/openapi.json"): Rule(ANY_KEY, cookie=True),
    ("GET", "/docs"): Rule(ANY_KEY, cookie=True),
    ("GET", "/docs/oauth2-redirect"): Rule(ANY_KEY, cookie=True),
    ("GET", "/redoc"): Rule(ANY_KEY, cookie=True),
}


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: str
    line: str | None
    via: str  # "bearer" or "cookie"


def principal_of(request: Request) -> Principal | None:
    return request.scope.get(PRINCIPAL)


def request_id_of(request: Request) -> str:
    return request.scope.get(REQUEST_ID) or uuid.uuid4().hex


def client_request_id_of(request: Request) -> str | None:
    return request.scope.get(CLIENT_REQUEST_ID)


# -- sessions ---------------------------------------------------------------------------------------

class Sessions:
    """``v1.<key id>.<expiry>.<HMAC-SHA256>`` cookies, signed with the keys file's session secret
    (shared by every replica). A session is only as good as its key: revoking the key ends it."""

    def __init__(self, lifetime_s: float):
        self.lifetime_s = lifetime_s

    @staticmethod
    def _signature(secret: bytes, payload: str) -> str:
        mac = hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    def issue(self, secret: bytes, key_id: str, now: float | None = None) -> tuple[str, int]:
        expires = int((now or time.time()) + self.lifetime_s)
        payload = f"v1.{key_id}.{expires}"
        return f"{payload}.{self._signature(secret, payload)}", expires

    def verify(self, secret: bytes, cookie: str, now: float | None = None) -> str | None:
        """The key id of a valid, unexpired cookie, else None."""
        parts = cookie.split(".")
        if len(parts) != 4 or parts[0] != "v1" or not parts[2].isdigit():
            return None
        payload = ".".join(parts[:3])
        if not hmac.compare_digest(self._signature(secret, payload), parts[3]):
            return None
        if int(parts[2]) <= (now or time.time()):
            return None
        return parts[1]


def cookie_values(headers: Headers, name: str) -> list[str]:
    """Every value of cookie ``name``: an app under /station also receives the cookie of the app at /."""
    values = []
    for header in headers.getlist("cookie"):
        for pair in header.split(";"):
            key, _, value = pair.strip().partition("=")
            if key == name and value:
                values.append(value)
    return values


# -- limits per key ---------------------------------------------------------------------------------

class KeyLimits:
    """Requests per second and image reads per minute for each key (moving windows)."""

    def __init__(self, requests_per_s: int, image_reads_per_min: int):
        from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self.requests = RateLimitItemPerSecond(requests_per_s)
        self.image_reads = RateLimitItemPerMinute(image_reads_per_min)

    def wait_s(self, key_id: str, image_read: bool) -> int | None:
        """None when the request is within the key's limits, else the seconds to wait."""
        for item in (self.requests, self.image_reads) if image_read else (self.requests,):
            if not self._limiter.hit(item, key_id):
                reset_time, _ = self._limiter.get_window_stats(item, key_id)
                return max(1, math.ceil(reset_time - time.time()))
        return None


# -- the decisions ----------------------------------------------------------------------------------

class Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 reason: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers
        self.reason = reason or code  # for the audit log: finer than the code the client sees


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host: str | None, allowed: list[str]) -> bool:
    if not host:
        return False
    name = _host_name(host)
    for pattern in allowed:
        pattern = pattern.lower()
        if pattern == "*" or name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


def _is_loopback(client) -> bool:
    try:
        return client is not None and ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


class Access:
    """The access decisions of one ingress replica (``app.state.access``)."""

    def __init__(self, settings: AccessSettings, log: DecisionLogSettings | None = None):
        self.settings = settings
        self.keys = KeyStore(settings.keys_file, logger) if settings.keys_file else None
        self.sessions = Sessions(settings.session_hours * 3600)
        self.limits = KeyLimits(settings.requests_per_s, settings.image_reads_per_min)
        self.audit = AuditLog(log) if log is not None and log.folder else None

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()

    def secure_cookie(self, scope) -> bool:
        setting = self.settings.secure_cookie
        return scope.get("scheme") == "https" if setting is None else setting

    def _same_origin(self, origin: str, host: str | None) -> bool:
        if origin in self.settings.allowed_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == host.strip().lower()

    def admit(self, scope, rule: Rule) -> Principal | None:
        """The principal a request acts as (None: public or open service); ``Refusal`` otherwise."""
        headers = Headers(scope=scope)
        if not host_allowed(headers.get("host"), self.settings.allowed_hosts):
            raise Refusal(400, "host_not_allowed", "the Host header names a host this service does not serve "
                                                   "(access.allowed_hosts)")
        query = QueryParams(scope.get("query_string", b""))
        if any(name.lower() in _CREDENTIAL_NAMES or _KEY_IN_TEXT.search(value) for name, value in query.multi_items()):
            raise Refusal(400, "key_in_query", "a key in the URL is refused (URLs end up in logs and histories): "
                                               "send it as the header Authorization: Bearer <key>")
        client_id = headers.get("x-request-id")
        if client_id is not None and not valid_request_id(client_id):
            raise Refusal(422, "invalid_request_id", "x-request-id must be 1-128 letters, digits or ._- "
                                                     "(starting with a letter or digit)")
        scope[CLIENT_REQUEST_ID] = client_id
        if scope["method"] not in _SAFE_METHODS:
            origin = headers.get("origin")
            if (origin is not None and not self._same_origin(origin, headers.get("host"))) or \
                    headers.get("sec-fetch-site") == "cross-site":
                raise Refusal(403, "cross_origin", "a page from another origin may not send this request")
        if self.keys is None:  # open service: loopback clients only, whatever the bind address
            if not _is_loopback(scope.get("client")):
                raise Refusal(403, "keys_required", "this service has no keys file: it answers loopback clients "
                                                    "only")
            return None
        if not rule.roles:
            return None
        principal = scope[PRINCIPAL] = self._identify(scope, headers, rule)
        if principal.role not in rule.roles:
            raise Refusal(403, "forbidden", f"a {principal.role} key may not use this route")
        if principal.role == "line":
            self._check_line(principal, query)
        wait_s = self.limits.wait_s(principal.key_id, rule.image_read)
        if wait_s is not None:
            what = "image reads per minute" if rule.image_read else "requests per second"
            raise Refusal(429, "rate_limited", f"this key is over its {what}; retry after {wait_s} s",
                          {"Retry-After": str(wait_s)})
        return principal

    def _identify(self, scope, headers: Headers, rule: Rule) -> Principal:
        authorization = headers.getlist("authorization")
        if authorization:
            scheme, _, token = authorization[0].partition(" ")
            if len(authorization) > 1 or scheme.lower() != "bearer" or not token.strip():
                raise Refusal(401, "unauthenticated", "send one header Authorization: Bearer <key>",
                              {"WWW-Authenticate": "Bearer"})
            key, why = self.keys.authenticate(token.strip())
            if key is None:
                raise Refusal(401, "unauthenticated", "the key is not valid (unknown or revoked)",
                              {"WWW-Authenticate": "Bearer"}, reason=why)
            return Principal(key.id, key.role, key.line, "bearer")
        if rule.cookie:
            key = self._session_key(headers)
            if key is not None:
                return Principal(key.id, key.role, key.line, "cookie")
        if rule.page:
            raise Refusal(303, "sign_in", "sign in first", {"Location": f"{scope.get('root_path', '')}/signin"})
        raise Refusal(401, "unauthenticated", "this route needs a key: send Authorization: Bearer <key>",
                      {"WWW-Authenticate": "Bearer"})

    def _session_key(self, headers: Headers) -> ApiKey | None:
        secret = self.keys.current().session_secret
        for value in cookie_values(headers, SESSION_COOKIE):
            key_id = self.sessions.verify(secret, value)
            key = self.keys.active(key_id) if key_id else None
            if key is not None and key.role in READERS:
                return key
        return None

    @staticmethod
    def _check_line(principal: Principal, query: QueryParams) -> None:
        if "threshold" in query or "image_threshold" in query:
            raise Refusal(403, "override_not_allowed", "a line key may not override the thresholds")
        if any(line != principal.line for line in query.getlist("line")):
            raise Refusal(403, "other_line", f"this key posts for line {principal.line} only")

    def record(self, entry: AuditEntry) -> None:
        if self.audit is not None:
            self.audit.record(entry)
        elif entry.reason is not None:  # no decision log folder: refusals still reach the replica's log
            logger.info("refused %s %s from %s: %s %s (key %s)", entry.method, entry.route, entry.client,
                        entry.status, entry.reason, entry.key_id)


_COMPILED = [(method, template, compile_path(template)[0], rule) for (method, template), rule in ROUTES.items()]


def route_path(scope) -> str:
    """The path within the app (Serve mounts an app under its route prefix, the ASGI root_path)."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root):len(root) + 1] in ("", "/"):
        path = path[len(root):]
    return path or "/"


def match_route(scope) -> tuple[str, Rule]:
    """(the route template of a request, its rule); ``Refusal`` 404/405 for anything else, so a
    route the table does not list cannot be reached (deny by default)."""
    path, method = route_path(scope), "GET" if scope["method"] == "HEAD" else scope["method"]
    allowed = []
    for rule_method, template, regex, rule in _COMPILED:
        if regex.fullmatch(path):  # fullmatch: `$` alone would accept a trailing newline
            if rule_method == method:
                return template, rule
            allowed.append(rule_method)
    if allowed:
        raise Refusal(405, "method_not_allowed", f"this route answers {', '.join(sorted(allowed))}",
                      {"Allow": ", ".join(sorted(allowed))})
    raise Refusal(404, "no_such_route", "no such route")


class AccessMiddleware:
    """Runs :meth:`Access.admit` before the app, and audits the outcome."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = uuid.uuid4().hex  # the service's own id: a client cannot choose or reuse it
        scope[REQUEST_ID] = request_id
        access: Access | None = getattr(scope["app"].state, "access", None)
        if access is None:
            response = error_response(503, "not_ready", "the service is starting", request_id)
            return await response(scope, receive, send)
        template, rule, status, reason = "(no route)", None, 500, None

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            try:
                template, rule = match_route(scope)
                scope[PRINCIPAL] = access.admit(scope, rule)
            except Refusal as refusal:
                reason = refusal.reason
                if refusal.status == 303:
                    response = RedirectResponse(refusal.headers["Location"], status_code=303)
                else:
                    response = error_response(refusal.status, refusal.code, refusal.message, request_id,
                                              refusal.headers)
                return await response(scope, receive, send_status)
            await self.app(scope, receive, send_status)
        finally:
            if rule is None or rule.audit or reason is not None:
                principal, client = scope.get(PRINCIPAL), scope.get("client")
                access.record(AuditEntry(time.time(), request_id, principal.key_id if principal else None,
                                         principal.role if principal else None, scope["method"], template,
                                         scope.get("path", ""), status, client[0] if client else None, reason))


# -- sign in and out (the operator page) ------------------------------------------------------------

router = APIRouter(include_in_schema=False)


def _cookie_path(request: Request) -> str:
    return request.scope.get("root_path", "") or "/"


@router.post("/v1/session")
async def sign_in(request: Request) -> Response:
    access: Access = request.app.state.access
    principal = principal_of(request)
    if access.keys is None or principal is None:
        return error_response(404, "no_keys", "this service has no keys file: the page needs no sign-in",
                              request_id_of(request))
    cookie, expires = access.sessions.issue(access.keys.current().session_secret, principal.key_id)
    response = JSONResponse({"key_id": principal.key_id, "role": principal.role,
                             "expires": datetime.fromtimestamp(expires, timezone.utc).isoformat()})
    response.set_cookie(SESSION_COOKIE, cookie, max_age=int(access.sessions.lifetime_s), path=_cookie_path(request),
                        secure=access.secure_cookie(request.scope), httponly=True, samesite="strict")
    return response


@router.delete("/v1/session")
async def sign_out(request: Request) -> Response:
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path=_cookie_path(request),
                           secure=request.app.state.access.secure_cookie(request.scope), httponly=True,
                           samesite="strict")
    return response
