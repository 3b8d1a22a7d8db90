"""``serving.client.post_frame`` against a scripted local HTTP server: which answers it retries, how long it
waits, which key it sends."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serving import client

OK = (200, {"Content-Type": "application/json"}, json.dumps({"decision": "OK"}))
BUSY = (503, {"Content-Type": "application/json", "Retry-After": "3"},
        json.dumps({"error": {"code": "overloaded", "message": "busy"}}))
BARE_BUSY = (503, {"Content-Type": "text/plain"}, "Request dropped due to backpressure")  # Serve's proxy
BAD = (400, {"Content-Type": "application/json"}, json.dumps({"error": {"code": "corrupt_image", "message": "no"}}))


@pytest.fixture
def scripted():
    """A server on 127.0.0.1 answering POSTs with the scripted answers in turn (the last one repeats); it keeps
    the bodies and the Authorization headers it received."""
    script: list = []
    posts: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            posts.append(self.rfile.read(int(self.headers["Content-Length"])))
            authorizations.append(self.headers.get("Authorization"))
            status, headers, body = script[min(len(posts), len(script)) - 1]
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    authorizations: list = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", script, posts, authorizations
    server.shutdown()
    server.server_close()


@pytest.fixture
def waits(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(client.time, "sleep", slept.append)
    return slept


@pytest.mark.parametrize("busy,expected_wait", [(BUSY, 3.0), (BARE_BUSY, client.BUSY_WAIT_S)])
def test_a_busy_answer_is_retried_after_its_retry_after_or_the_default_wait(scripted, waits, busy, expected_wait):
    url, script, posts, _ = scripted
    script += [busy, OK]
    assert client.post_frame(b"frame", url) == {"decision": "OK"}
    assert waits == [expected_wait] and posts == [b"frame", b"frame"]


def test_other_errors_are_not_retried(scripted, waits):
    url, script, posts, _ = scripted
    script.append(BAD)
    with pytest.raises(client.InspectionFailed, match="HTTP 400: no") as failed:
        client.post_frame(b"frame", url)
    assert failed.value.body["error"]["code"] == "corrupt_image" and waits == [] and len(posts) == 1


def test_a_service_that_stays_busy_gives_up_after_the_retries(scripted, waits):
    url, script, posts, _ = scripted
    script.append(BARE_BUSY)
    with pytest.raises(client.InspectionFailed, match="HTTP 503") as failed:
        client.post_frame(b"frame", url, busy_retries=2)
    assert failed.value.status == 503 and waits == [client.BUSY_WAIT_S] * 2 and len(posts) == 3


LIMITED = (429, {"Content-Type": "application/json", "Retry-After": "2"},
           json.dumps({"error": {"code": "rate_limited", "message": "over"}}))
DENIED = (401, {"Content-Type": "application/json"}, json.dumps({"error": {"code": "unauthenticated", "message": "no"}}))


def test_a_key_over_its_limit_waits_as_asked_and_a_refused_key_is_not_retried(scripted, waits):
    url, script, posts, _ = scripted
    script += [LIMITED, OK]
    assert client.post_frame(b"frame", url, key="jk_x") == {"decision": "OK"} and waits == [2.0]
    script[:] = [DENIED]
    posts.clear()
    with pytest.raises(client.InspectionFailed, match="HTTP 401"):
        client.post_frame(b"frame", url, key="jk_x")
    assert len(posts) == 1 and waits == [2.0]


def test_the_key_comes_from_a_file_or_the_environment_and_goes_in_the_header(scripted, tmp_path, monkeypatch):
    url, script, _, authorizations = scripted
    script.append(OK)
    monkeypatch.delenv(client.KEY_ENV, raising=False)
    monkeypatch.delenv(client.KEY_FILE_ENV, raising=False)
    assert client.read_key() is None
    (tmp_path / "line7.key").write_text("jk_from_file\n")
    monkeypatch.setenv(client.KEY_FILE_ENV, str(tmp_path / "line7.key"))
    assert client.read_key() == "jk_from_file"
    monkeypatch.setenv(client.KEY_ENV, "jk_from_env")
    assert client.read_key() == "jk_from_env" and client.read_key(tmp_path / "line7.key") == "jk_from_file"
    client.post_frame(b"frame", url, key=client.read_key())
    assert authorizations == ["Bearer jk_from_env"]
    with pytest.raises(ValueError, match="cannot read the API key file .*absent") as failed:
        client.read_key(tmp_path / "absent")
    (tmp_path / "two.key").write_text("jk_a jk_b")
    with pytest.raises(ValueError, match="one key"):
        client.read_key(tmp_path / "two.key")
    assert "jk_a" not in str(failed.value)
