"""The access layer in-process: ``AccessMiddleware`` in front of an app that echoes who it was
called as. No Serve: every decision the middleware takes is visible here, fast. The same
decisions through the real Serve app: tests/serving/test_decisions.py."""

import asyncio
import json
import time
from types import SimpleNamespace
from urllib.parse import urlencode

import pytest

from serving.access import (PRINCIPAL, ROUTES, SESSION_COOKIE, Access, AccessMiddleware, AccessSettings, Sessions,
                            host_allowed)
from serving.keys import add_key, key_id, read_keys_file, write_keys_file
from tests.serving.conftest import write_api_keys


class Recorded:
    def __init__(self):
        self.entries = []

    def record(self, entry):
        self.entries.append(entry)

    def close(self):
        pass


async def _echo(scope, receive, send):
    principal = scope.get(PRINCIPAL)
    body = json.dumps({"role": principal.role if principal else None,
                       "via": principal.via if principal else None}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def call(access, method, path, headers=None, query=None, client="127.0.0.1", root_path=""):
    """(status, headers, JSON body) of one request through the middleware."""
    headers = {"host": "127.0.0.1:8000", **(headers or {})}
    scope = {"type": "http", "method": method, "path": root_path + path, "root_path": root_path,
             "query_string": urlencode(query or {}).encode(), "scheme": "http", "client": (client, 50000),
             "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
             "app": SimpleNamespace(state=SimpleNamespace(access=access))}
    messages = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        messages.append(message)

    asyncio.run(AccessMiddleware(_echo)(scope, receive, send))
    start = messages[0]
    body = b"".join(m.get("body", b"") for m in messages[1:])
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], response_headers, json.loads(body) if body and body[:1] in b"{[" else body


@pytest.fixture
def keys(tmp_path):
    return write_api_keys(tmp_path)


def make_access(keys=None, **settings):
    access = Access(AccessSettings(keys_file=str(keys.file) if keys else None, **settings))
    access.audit = Recorded()
    return access


def bearer(keys, name):
    return keys.header(name)


def test_every_route_of_the_app_is_in_the_route_table():
    from serving.api import api

    def routes(items):  # FastAPI keeps included routers nested (0.16x: their original_router)
        for route in items:
            inner = getattr(route, "original_router", None) or getattr(route, "router", None)
            if inner is not None and not hasattr(route, "path"):
                yield from routes(inner.routes)
            else:
                yield from ((method, route.path) for method in route.methods if method != "HEAD")

    assert set(routes(api.routes)) == set(ROUTES)


def test_a_route_missing_from_the_table_is_not_reachable(keys):
    access = make_access(keys)
    status, _, body = call(access, "GET", "/v1/secret-admin-thing", bearer(keys, "admin"))
    assert status == 404 and body["error"]["code"] == "no_such_route"
    status, headers, body = call(access, "PUT", "/v1/inspect", bearer(keys, "admin"))
    assert status == 405 and headers["allow"] == "POST"


@pytest.mark.parametrize("name, method, path, query, status, code", [
    (None, "POST", "/v1/inspect", {}, 401, "unauthenticated"),
    ("revoked", "GET", "/v1/model", {}, 401, "unauthenticated"),
    ("line-L1", "POST", "/v1/inspect", {"line": "L1"}, 200, None),
    ("line-L1", "POST", "/v1/inspect", {}, 200, None),  # the service fills in its line
    ("line-L1", "POST", "/v1/inspect", {"line": "L2"}, 403, "other_line"),
    ("line-L1", "POST", "/v1/inspect", {"image_threshold": "0.1"}, 403, "override_not_allowed"),
    ("line-L1", "GET", "/v1/decisions", {}, 403, "forbidden"),
    ("operator", "POST", "/v1/inspect", {}, 403, "forbidden"),
    ("operator", "GET", "/v1/decisions/abc/overlay.png", {}, 200, None),
    ("admin", "POST", "/v1/inspect", {"threshold": "0.2", "line": "L7"}, 200, None),
    ("line-L2", "GET", "/healthz", {}, 200, None),
    (None, "GET", "/healthz", {}, 200, None),
])
def test_roles(keys, name, method, path, query, status, code):
    answer_status, _, body = call(make_access(keys), method, path, bearer(keys, name) if name else {}, query)
    assert answer_status == status, body
    if code:
        assert body["error"]["code"] == code


def test_garbage_and_wrong_schemes_are_401_and_audited_without_the_key(keys):
    access = make_access(keys)
    for header in ("Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer", f"Token {keys.tokens['admin']}",
                   f"Bearer {keys.tokens['admin']}x"):
        status, headers, body = call(access, "GET", "/v1/model", {"Authorization": header})
        assert status == 401 and headers["www-authenticate"] == "Bearer", header
        assert keys.tokens["admin"] not in json.dumps(body)
    reasons = [entry.reason for entry in access.audit.entries]
    assert reasons[0] == "malformed_key" and reasons[-1] == "malformed_key"
    assert all(keys.tokens["admin"] not in repr(entry) for entry in access.audit.entries)
    status, _, _ = call(access, "GET", "/v1/model", bearer(keys, "revoked"))
    assert status == 401 and access.audit.entries[-1].reason == "revoked_key"
    assert access.audit.entries[-1].key_id is None  # a refused key acts as nobody


def test_a_key_in_the_query_string_is_refused_even_with_a_valid_header(keys):
    access = make_access(keys)
    for query in ({"api_key": keys.tokens["operator"]}, {"token": "x"}, {"part_id": keys.tokens["operator"]}):
        status, _, body = call(access, "GET", "/v1/decisions", bearer(keys, "operator"), query)
        assert status == 400 and body["error"]["code"] == "key_in_query", query


@pytest.mark.parametrize("host, allowed, ok", [
    ("127.0.0.1:8000", ["127.0.0.1"], True), ("[::1]:8000", ["::1"], True), ("LOCALHOST", ["localhost"], True),
    ("evil.example:8000", ["127.0.0.1", "localhost"], False), ("a.plant.example", ["*.plant.example"], True),
    ("plant.example.evil", ["*.plant.example"], False), ("anything", ["*"], True), (None, ["*"], False),
])
def test_host_allowlist(host, allowed, ok):
    assert host_allowed(host, allowed) is ok


def test_a_rebound_host_name_is_refused(keys):
    status, _, body = call(make_access(keys), "GET", "/healthz", {"host": "evil.example:8000"})
    assert status == 400 and body["error"]["code"] == "host_not_allowed"


@pytest.mark.parametrize("origin, extra, ok", [
    ("http://127.0.0.1:8000", [], True), ("http://evil.example", [], False), ("null", [], False),
    ("http://127.0.0.1:9999", [], False), ("https://hmi.plant.example", ["https://hmi.plant.example"], True),
])
def test_state_changing_requests_from_another_origin_are_refused(keys, origin, extra, ok):
    access = make_access(keys, allowed_origins=extra)
    status, _, body = call(access, "POST", "/v1/inspect", {"Origin": origin, **bearer(keys, "line-L1")})
    assert (status == 200) is ok, body
    if not ok:
        assert body["error"]["code"] == "cross_origin"


def test_without_keys_every_route_is_open_to_loopback_clients_only():
    access = make_access()
    assert call(access, "GET", "/v1/decisions")[0] == 200
    assert call(access, "POST", "/v1/inspect", query={"threshold": "0.1"})[0] == 200
    status, _, body = call(access, "GET", "/v1/decisions", client="192.0.2.7")
    assert status == 403 and body["error"]["code"] == "keys_required"
    assert call(access, "GET", "/v1/decisions", {"host": "evil.example"})[0] == 400  # DNS rebinding


def _session(keys, name, lifetime_s=3600, now=None):
    return Sessions(lifetime_s).issue(read_keys_file(keys.file).session_secret, key_id(keys.tokens[name]), now)[0]


def test_a_session_cookie_stands_for_an_operator_key_on_the_pages_reads_only(keys):
    access = make_access(keys)
    cookie = {"Cookie": f"other=1; {SESSION_COOKIE}={_session(keys, 'operator')}"}
    status, _, body = call(access, "GET", "/v1/decisions/abc/frame.png", cookie)
    assert status == 200 and body == {"role": "operator", "via": "cookie"}
    assert call(access, "GET", "/", cookie)[0] == 200
    assert call(access, "POST", "/v1/inspect", cookie)[0] == 401  # never for posting frames
    assert call(access, "POST", "/v1/session", cookie)[0] == 401  # a session cannot mint sessions


@pytest.mark.parametrize("forge", ["tampered", "expired", "line key", "revoked key", "other secret"])
def test_a_forged_or_stale_session_is_refused(keys, forge):
    if forge == "tampered":
        cookie = _session(keys, "operator").replace(key_id(keys.tokens["operator"]), key_id(keys.tokens["admin"]))
    elif forge == "expired":
        cookie = _session(keys, "operator", lifetime_s=10, now=time.time() - 60)
    elif forge == "line key":
        cookie = _session(keys, "line-L1")
    elif forge == "revoked key":
        cookie = _session(keys, "revoked")
    else:
        cookie = Sessions(3600).issue(b"another service's secret", key_id(keys.tokens["operator"]))[0]
    status, _, _ = call(make_access(keys), "GET", "/v1/decisions", {"Cookie": f"{SESSION_COOKIE}={cookie}"})
    assert status == 401


def test_a_browser_without_a_session_is_sent_to_the_sign_in_page(keys):
    status, headers, _ = call(make_access(keys), "GET", "/", root_path="/station")
    assert status == 303 and headers["location"] == "/station/signin"
    assert call(make_access(keys), "GET", "/signin")[0] == 200


def test_requests_over_a_keys_limits_get_429_with_retry_after(keys):
    access = make_access(keys, requests_per_s=3, image_reads_per_min=2)
    statuses = [call(access, "GET", "/v1/model", bearer(keys, "operator"))[0] for _ in range(5)]
    assert statuses[:3] == [200] * 3 and statuses[3:] == [429, 429]
    status, headers, body = call(access, "GET", "/v1/model", bearer(keys, "operator"))
    assert status == 429 and headers["retry-after"] == "1" and "per second" in body["error"]["message"]
    assert call(access, "GET", "/v1/model", bearer(keys, "admin"))[0] == 200  # limits are per key
    images = [call(access, "GET", "/v1/decisions/x/mask.png", bearer(keys, "admin")) for _ in range(3)]
    assert [status for status, _, _ in images] == [200, 200, 429]
    assert 1 <= int(images[-1][1]["retry-after"]) <= 60 and "image reads" in images[-1][2]["error"]["message"]
    assert access.audit.entries[-1].reason == "rate_limited" and access.audit.entries[-1].role == "admin"


def test_keys_added_while_running_apply_within_a_second_and_a_broken_file_keeps_the_last(keys):
    from serving import keys as keys_module

    access = make_access(keys)
    now = [time.monotonic()]  # the store looked at the file when it was made, just now
    access.keys.clock = lambda: now[0]
    token, keyset = add_key(read_keys_file(keys.file), "operator", None, "night-shift")
    write_keys_file(keys.file, keyset)
    assert call(access, "GET", "/v1/model", {"Authorization": f"Bearer {token}"})[0] == 401  # not looked at yet
    now[0] += keys_module.RELOAD_CHECK_S
    assert call(access, "GET", "/v1/model", {"Authorization": f"Bearer {token}"})[0] == 200
    (keys.file).write_text("key broken\n")
    keys.file.chmod(0o600)
    now[0] += keys_module.RELOAD_CHECK_S
    assert call(access, "GET", "/v1/model", {"Authorization": f"Bearer {token}"})[0] == 200  # last good keys kept


def test_audit_rows_name_the_key_route_status_and_client_never_the_query(keys):
    access = make_access(keys)
    call(access, "POST", "/v1/inspect", bearer(keys, "line-L1"), {"line": "L2", "part_id": "P-1"}, client="10.1.2.3")
    call(access, "GET", "/healthz")  # public and polled: not audited
    call(access, "GET", "/v1/decisions/abc", bearer(keys, "operator"))
    refused, read = access.audit.entries
    assert (refused.key_id, refused.role, refused.method, refused.route, refused.status, refused.client,
            refused.reason) == (key_id(keys.tokens["line-L1"]), "line", "POST", "/v1/inspect", 403, "10.1.2.3",
                                "other_line")
    assert refused.path == "/v1/inspect" and len(refused.request_id) == 32
    assert (read.route, read.path, read.status, read.reason) == ("/v1/decisions/{request_id}", "/v1/decisions/abc",
                                                                 200, None)


def test_a_client_request_id_must_be_well_formed(keys):
    for bad in ("a" * 129, "-leading-dash", "two words"):
        status, _, body = call(make_access(keys), "GET", "/healthz", {"x-request-id": bad})
        assert status == 422 and body["error"]["code"] == "invalid_request_id", bad


def test_the_pages_session_may_post_a_review_from_its_own_origin_only(keys):
    access = make_access(keys)
    cookie = {"Cookie": f"{SESSION_COOKIE}={_session(keys, 'operator')}"}
    path = "/v1/decisions/abc/review"
    status, _, body = call(access, "POST", path, {**cookie, "Origin": "http://127.0.0.1:8000"})
    assert status == 200 and body == {"role": "operator", "via": "cookie"}
    status, _, body = call(access, "POST", path, {**cookie, "Origin": "http://evil.example"})
    assert status == 403 and body["error"]["code"] == "cross_origin"
    assert call(access, "POST", path, bearer(keys, "line-L1"))[0] == 403
