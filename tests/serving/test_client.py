"""``serving.client.post_frame`` against a scripted local HTTP server: which answers it retries, how long it waits."""

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
    """A server on 127.0.0.1 answering POSTs with the scripted answers in turn (the last one repeats)."""
    script: list = []
    posts: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            posts.append(self.rfile.read(int(self.headers["Content-Length"])))
            status, headers, body = script[min(len(posts), len(script)) - 1]
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", script, posts
    server.shutdown()
    server.server_close()


@pytest.fixture
def waits(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(client.time, "sleep", slept.append)
    return slept


@pytest.mark.parametrize("busy,expected_wait", [(BUSY, 3.0), (BARE_BUSY, client.BUSY_WAIT_S)])
def test_a_busy_answer_is_retried_after_its_retry_after_or_the_default_wait(scripted, waits, busy, expected_wait):
    url, script, posts = scripted
    script += [busy, OK]
    assert client.post_frame(b"frame", url) == {"decision": "OK"}
    assert waits == [expected_wait] and posts == [b"frame", b"frame"]


def test_other_errors_are_not_retried(scripted, waits):
    url, script, posts = scripted
    script.append(BAD)
    with pytest.raises(client.InspectionFailed, match="HTTP 400: no") as failed:
        client.post_frame(b"frame", url)
    assert failed.value.body["error"]["code"] == "corrupt_image" and waits == [] and len(posts) == 1


def test_a_service_that_stays_busy_gives_up_after_the_retries(scripted, waits):
    url, script, posts = scripted
    script.append(BARE_BUSY)
    with pytest.raises(client.InspectionFailed, match="HTTP 503") as failed:
        client.post_frame(b"frame", url, busy_retries=2)
    assert failed.value.status == 503 and waits == [client.BUSY_WAIT_S] * 2 and len(posts) == 3
