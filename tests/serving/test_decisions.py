"""The decision log through the real service: /v1/inspect records, the read API serves;
and the access layer (keys, roles, session, limits, audit) through the same real app.

Serve runs in-process on a free localhost port with the bright-spot stand-in model
(white pixels are the defect), so every decision is known in advance. Both apps run with
the module's keys file (tests/serving/conftest.py): line keys post, operator keys read.
"""

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from tests.serving.images import encode, textured
from tests.serving.stand_ins import bright_spot_model

LIMITS = {"max_body_bytes": 1024 * 1024, "max_pixels": 500_000, "max_inputs_per_frame": 64, "min_frame_side": 8}


def deploy_logged_app(name: str, route_prefix: str, log: dict, access: dict | None = None) -> None:
    from ray import serve

    from serving.api import InspectionAPI

    settings = {"model_uri": "unused", **LIMITS, "decision_log": log, "access": access or {}}
    model = bright_spot_model().options(ray_actor_options={"num_cpus": 0.1}, name=f"{name}-model").bind()
    serve.run(InspectionAPI.options(ray_actor_options={"num_cpus": 0.1}).bind(model, settings), name=name,
              route_prefix=route_prefix)


TIGHT = {"requests_per_s": 4, "image_reads_per_min": 2}  # the /broken app's limits per key (429 test)
SAMPLE_RATE = 0.25  # the /sampled app keeps NG frames and this share of the other OK frames


@pytest.fixture(scope="module")
def service(serve_url, tmp_path_factory, api_keys):
    directory = tmp_path_factory.mktemp("decision-log")
    blocker = directory / "a-file"
    blocker.write_text("the broken app's log folder would have to be inside this file")
    logged, keys = {"folder": str(directory / "log"), "frames": "ng"}, {"keys_file": str(api_keys.file)}
    deploy_logged_app("logged", "/", logged, keys)
    deploy_logged_app("broken", "/broken", {"folder": str(blocker / "log")}, {**keys, **TIGHT})
    deploy_logged_app("sampled", "/sampled", {"folder": str(directory / "sampled"), "frames": "ng+sample",
                                              "ok_sample_rate": SAMPLE_RATE}, keys)
    return {"url": serve_url, "folder": directory / "log", "log": logged, "keys": api_keys, "access": keys,
            "sampled": directory / "sampled"}


def defect_frame(seed: int, height: int = 60, width: int = 90) -> np.ndarray:
    frame = textured(height, width, seed=seed)
    frame[10 + seed % 20:16 + seed % 20, 30:38] = 255  # a 6 x 8 px defect
    return frame


def post(url: str, frame: np.ndarray, auth: dict | None = None, **params) -> requests.Response:
    return requests.post(url + "/v1/inspect", data=encode(frame), headers={"Content-Type": "image/png", **(auth or {})},
                         params=params, timeout=60)


@pytest.fixture(scope="module")
def posted(service):
    """Three NG and three OK frames on two lines, oldest first."""
    answers = []
    for index in range(6):
        frame = defect_frame(index) if index % 2 == 0 else textured(60, 90, seed=index)
        line = f"L{index % 2 + 1}"
        answer = post(service["url"], frame, service["keys"].header(f"line-{line}"), line=line, station="cam-2",
                      part_id=f"P-{index:03d}")
        assert answer.status_code == 200, answer.text
        answers.append((frame, answer.json()))
    return answers


def get(service, path, key="operator", **params):
    return requests.get(service["url"] + path, params=params, headers=service["keys"].header(key), timeout=30)


def test_each_decision_is_logged_before_its_reply_with_the_client_fields(service, posted):
    for index, (_, body) in enumerate(posted):
        assert body["decision_log"] == {"status": "logged"}
        assert (body["line"], body["station"], body["part_id"]) == (f"L{index % 2 + 1}", "cam-2", f"P-{index:03d}")
        assert body["decision"] == ("NG" if index % 2 == 0 else "OK")
    page = get(service, "/v1/decisions").json()
    assert [item["request_id"] for item in page["items"]] == [body["request_id"] for _, body in reversed(posted)]
    newest = page["items"][0]
    assert newest["model"] == {"name": "bright-spot", "version": "0", "run_id": None}
    assert (newest["decision"], newest["line"], newest["part_id"]) == ("OK", "L2", "P-005")
    assert "frame_png" not in newest["links"] or newest["links"]["frame_png"] is None  # frames: ng


def test_an_ng_record_links_its_exact_frame_mask_and_overlay(service, posted):
    frame, body = posted[2]
    detail = get(service, f"/v1/decisions/{body['request_id']}").json()
    for key in ("decision", "reason", "image_score", "image_threshold", "threshold", "defect_area_px", "regions",
                "image", "timings_ms"):
        assert detail[key] == body[key], key
    assert detail["regions"][0]["bbox"] == {"x": 30, "y": 12, "width": 8, "height": 6}
    stored = cv2.imdecode(np.frombuffer(get(service, detail["links"]["frame_png"]).content, np.uint8),
                          cv2.IMREAD_COLOR)
    assert np.array_equal(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB), frame)
    mask = cv2.imdecode(np.frombuffer(get(service, detail["links"]["mask_png"]).content, np.uint8),
                        cv2.IMREAD_GRAYSCALE)
    assert int((mask > 0).sum()) == 48
    overlay = get(service, detail["links"]["overlay_png"])
    assert overlay.headers["content-type"] == "image/png"
    pixels = cv2.imdecode(np.frombuffer(overlay.content, np.uint8), cv2.IMREAD_COLOR)
    assert pixels.shape == (60, 90, 3) and pixels[14, 33].tolist() != [255, 255, 255]  # tinted red
    small = get(service, detail["links"]["overlay_png"], max_side=45)
    assert cv2.imdecode(np.frombuffer(small.content, np.uint8), cv2.IMREAD_COLOR).shape == (30, 45, 3)
    ok_id = posted[1][1]["request_id"]
    missing = get(service, f"/v1/decisions/{ok_id}/frame.png")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "frame_not_kept"


def test_filters_cursor_paging_and_counts(service, posted):
    ng_l1 = get(service, "/v1/decisions", line="L1", decision="NG").json()["items"]
    assert [item["part_id"] for item in ng_l1] == ["P-004", "P-002", "P-000"]
    seen, cursor = [], None
    while True:
        page = get(service, "/v1/decisions", limit=4, **({"cursor": cursor} if cursor else {})).json()
        seen += [item["request_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [body["request_id"] for _, body in reversed(posted)]
    assert get(service, "/v1/decisions", since="2000-01-01T00:00:00Z", until="2001-01-01T00:00:00").json()["items"] == []
    assert len(get(service, "/v1/decisions", since="2000-01-01T00:00:00+02:00").json()["items"]) == 6
    counts = get(service, "/v1/decision-counts").json()
    assert counts["window_s"] == 3600
    assert sorted((c["line"], c["ok"], c["ng"]) for c in counts["lines"]) == [("L1", 0, 3), ("L2", 3, 0)]


@pytest.mark.parametrize("path, params, status, code", [
    ("/v1/decisions", {"line": "L 1"}, 422, "invalid_parameter"),
    ("/v1/decisions", {"line": "<script>"}, 422, "invalid_parameter"),
    ("/v1/decisions", {"line": "x" * 65}, 422, "invalid_parameter"),
    ("/v1/decisions", {"decision": "MAYBE"}, 422, "invalid_parameter"),
    ("/v1/decisions", {"limit": 0}, 422, "invalid_parameter"),
    ("/v1/decisions", {"limit": 100000}, 422, "invalid_parameter"),
    ("/v1/decisions", {"cursor": "-1"}, 422, "invalid_parameter"),
    ("/v1/decisions", {"since": "yesterday"}, 422, "invalid_parameter"),
    ("/v1/decision-counts", {"window_s": 10**9}, 422, "invalid_parameter"),
    ("/v1/decisions/has%20space", {}, 422, "invalid_parameter"),
    ("/v1/decisions/" + "a" * 200, {}, 422, "invalid_parameter"),
    ("/v1/decisions/no-such-request", {}, 404, "unknown_request_id"),
    ("/v1/decisions/no-such-request/overlay.png", {"max_side": 5}, 422, "invalid_parameter"),
    ("/v1/decisions/no-such-request/overlay.png", {}, 404, "unknown_request_id"),
    ("/v1/decisions/no-such-request%0A", {}, 422, "invalid_parameter"),  # a trailing newline: not a whole match
    ("/v1/decisions", {"line": "L1\n"}, 422, "invalid_parameter"),
])
def test_bad_read_requests_get_a_4xx_json_error(service, posted, path, params, status, code):
    answer = get(service, path, **params)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code


def test_bad_client_fields_are_refused_before_the_frame_is_read(service):
    for params in ({"line": "L1;DROP"}, {"station": ""}, {"part_id": "p" * 65}, {"station": "cam\n"}):
        answer = post(service["url"], textured(32, 32), service["keys"].header("admin"), **params)
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_parameter", params


def test_a_broken_store_does_not_fail_the_inspection(service):
    answer = post(service["url"] + "/broken", defect_frame(0), service["keys"].header("admin"), line="L9")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["decision"] == "NG" and body["line"] == "L9"
    assert body["decision_log"]["status"] == "not_logged" and "store failed" in body["decision_log"]["reason"]
    assert "a-file" not in body["decision_log"]["reason"]  # the cause, with its path, is in the log only
    assert get(service, "/broken/v1/decisions", key="admin").status_code == 404


def test_the_log_survives_a_restart_of_the_ingress(service, posted):
    from ray import serve

    before = [item["request_id"] for item in get(service, "/v1/decisions").json()["items"]]
    serve.delete("logged")
    deploy_logged_app("logged", "/", service["log"], service["access"])
    after = post(service["url"], defect_frame(7), service["keys"].header("line-L1")).json()
    assert after["line"] == "L1"  # a line key's frames are its line's, ?line= or not
    assert after["decision_log"] == {"status": "logged"}
    items = [item["request_id"] for item in get(service, "/v1/decisions").json()["items"]]
    assert items == [after["request_id"]] + before


def test_decisions_and_the_log_are_exported_as_prometheus_metrics(service, posted):
    import ray

    answer = post(service["url"] + "/broken", defect_frame(1), service["keys"].header("admin"))
    assert answer.json()["decision_log"]["status"] == "not_logged"
    port = ray._private.worker.global_worker.node.metrics_export_port
    deadline, text = time.monotonic() + 60, ""
    while time.monotonic() < deadline:  # Ray exports every few seconds
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if all(name in text for name in ("ray_jaffnet_decisions", "ray_jaffnet_decision_log_written",
                                         'kind="store_failed"')):
            break
        time.sleep(2)
    assert 'decision="NG"' in text and 'model_version="0"' in text
    assert "ray_jaffnet_image_score_bucket" in text and "ray_jaffnet_decision_log_queue_depth" in text
    assert 'kind="store_failed"' in text  # the broken app's dropped write


# -- access control through the real app (serving.access; unit tests: test_access.py) ----------------

PRINCIPALS = {  # who: (key name or a raw Authorization header, ?query of /v1/inspect)
    "anonymous": (None, {}),
    "garbage": ("Bearer jk_000000000000_not-a-key", {}),
    "revoked": ("revoked", {}),
    "line, own line": ("line-L1", {"line": "L1"}),
    "line, other line": ("line-L1", {"line": "L2"}),
    "line, threshold override": ("line-L1", {"line": "L1", "threshold": "0.3"}),
    "operator": ("operator", {}),
    "admin": ("admin", {}),
}
_NO_KEY = {"anonymous": 401, "garbage": 401, "revoked": 401}
READERS = {**_NO_KEY, "line, own line": 403, "line, other line": 403, "line, threshold override": 403,
           "operator": 200, "admin": 200}
ANY_KEY = {**_NO_KEY, "line, own line": 200, "line, other line": 200, "line, threshold override": 200,
           "operator": 200, "admin": 200}


def _everyone(status):
    return dict.fromkeys(PRINCIPALS, status)


MATRIX = {
    ("GET", "/healthz"): _everyone(200),
    ("POST", "/v1/inspect"): {**_NO_KEY, "line, own line": 200, "line, other line": 403,
                              "line, threshold override": 403, "operator": 403, "admin": 200},
    **{("GET", path): READERS for path in (
        "/v1/model", "/v1/decisions", "/v1/decision-counts", "/v1/decisions/{request_id}",
        "/v1/decisions/{request_id}/frame.png", "/v1/decisions/{request_id}/mask.png",
        "/v1/decisions/{request_id}/overlay.png")},
    ("POST", "/v1/decisions/{request_id}/review"): READERS,
    ("POST", "/v1/escapes"): READERS,
    ("GET", "/v1/line-quality"): READERS,
    ("GET", "/"): {**READERS, "anonymous": 303},  # a browser without a session goes to the sign-in page
    ("POST", "/v1/session"): READERS,
    ("DELETE", "/v1/session"): _everyone(204),
    **{("GET", path): _everyone(200) for path in ("/signin", "/operator/app.js", "/operator/signin.js",
                                                  "/operator/style.css")},
    ("GET", "/favicon.ico"): _everyone(204),
    **{("GET", path): ANY_KEY for path in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")},
}


def _authorization(service, who):
    key = PRINCIPALS[who][0]
    if key is None:
        return {}
    return {"Authorization": key} if key.startswith("Bearer ") else service["keys"].header(key)


def test_every_route_answers_every_kind_of_caller_as_its_role_allows(service, posted):
    from serving.access import ROUTES

    assert set(MATRIX) == set(ROUTES)  # the matrix covers every route (test_access: every route is in ROUTES)
    ng_id = posted[0][1]["request_id"]
    wrong = []
    json_bodies = {"/v1/decisions/{request_id}/review": {"verdict": "NG"},
                   "/v1/escapes": {"part_id": "P-001"}}  # an OK decision on L2
    for (method, template), expected in MATRIX.items():
        body, content_type = (json.dumps(json_bodies[template]), "application/json") if template in json_bodies \
            else (encode(textured(40, 60)) if method == "POST" else None, "image/png")
        for who, status in expected.items():
            params = PRINCIPALS[who][1] if template == "/v1/inspect" else {}
            answer = requests.request(method, service["url"] + template.replace("{request_id}", ng_id),
                                      data=body, params=params,
                                      headers={"Content-Type": content_type, **_authorization(service, who)},
                                      allow_redirects=False, timeout=60)
            if answer.status_code != status:
                wrong.append(f"{method} {template} as {who}: {answer.status_code}, expected {status}: "
                             f"{answer.text[:120]}")
            elif status in (401, 403):
                assert answer.json()["error"]["code"], answer.text
    assert not wrong, "\n".join(wrong)


def _eventually(check, timeout_s=15.0):
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def test_a_key_added_then_revoked_works_then_stops_without_a_restart_and_its_session_ends(service, capsys):
    from cli.main import main
    from serving.keys import key_id

    keys_file = str(service["keys"].file)
    assert main(["keys", "add", "--file", keys_file, "--role", "operator", "--name", "rotated"]) == 0
    token = capsys.readouterr().out.strip()
    header = {"Authorization": f"Bearer {token}"}

    def status(**kwargs):
        return requests.get(service["url"] + "/v1/decision-counts", timeout=30, **kwargs).status_code

    assert _eventually(lambda: status(headers=header) == 200)
    signed_in = requests.post(service["url"] + "/v1/session", headers=header, timeout=30)
    assert signed_in.status_code == 200 and signed_in.json()["role"] == "operator"
    cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie and token not in cookie
    assert status(cookies=signed_in.cookies) == 200
    assert main(["keys", "revoke", "--file", keys_file, key_id(token)]) == 0
    assert _eventually(lambda: status(headers=header) == 401)
    assert status(cookies=signed_in.cookies) == 401  # a session is only as good as its key


def test_a_key_in_the_query_string_is_refused(service):
    token = service["keys"].tokens["operator"]
    for params in ({"api_key": token}, {"key": token}, {"line": token}):
        answer = requests.get(service["url"] + "/v1/decisions", params=params,
                              headers=service["keys"].header("operator"), timeout=30)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "key_in_query", params


def test_over_its_limits_a_key_gets_429_with_retry_after(service):
    from concurrent.futures import ThreadPoolExecutor

    header = service["keys"].header("operator")
    burst = TIGHT["requests_per_s"] + 3
    with ThreadPoolExecutor(burst) as pool:  # all within the one-second window
        answers = list(pool.map(lambda _: requests.get(service["url"] + "/broken/v1/model", headers=header,
                                                       timeout=30), range(burst)))
    refused = [a for a in answers if a.status_code == 429]
    assert refused and sum(a.status_code == 200 for a in answers) <= TIGHT["requests_per_s"]
    assert all(a.headers["Retry-After"] == "1" and a.json()["error"]["code"] == "rate_limited" for a in refused)
    time.sleep(1.1)
    reads = [requests.get(service["url"] + "/broken/v1/decisions/some-id/frame.png", headers=header, timeout=30)
             for _ in range(TIGHT["image_reads_per_min"] + 1)]
    assert [a.status_code for a in reads] == [404] * TIGHT["image_reads_per_min"] + [429]
    assert 1 <= int(reads[-1].headers["Retry-After"]) <= 60 and "image reads" in reads[-1].json()["error"]["message"]
    assert requests.get(service["url"] + "/broken/v1/model", headers=service["keys"].header("admin"),
                        timeout=30).status_code == 200  # other keys are not held back


def test_a_forged_cross_origin_multipart_post_is_refused(service):
    frame = encode(defect_frame(3))
    for auth in ({}, service["keys"].header("line-L1")):  # a page could not add the header; refused either way
        for forged in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
            answer = requests.post(service["url"] + "/v1/inspect", files={"file": ("f.png", frame, "image/png")},
                                   headers={**forged, **auth}, timeout=30)
            assert answer.status_code == 403 and answer.json()["error"]["code"] == "cross_origin", forged
    same_origin = requests.post(service["url"] + "/v1/inspect", files={"file": ("f.png", frame, "image/png")},
                                headers={"Origin": service["url"], **service["keys"].header("line-L1")}, timeout=30)
    assert same_origin.status_code == 200, same_origin.text


def test_a_rebound_host_name_is_refused(service):
    answer = requests.get(service["url"] + "/v1/decisions", headers={"Host": "attacker.example:80",
                                                                     **service["keys"].header("operator")}, timeout=30)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "host_not_allowed"


def test_request_ids_are_the_services_and_the_audit_log_says_who_did_what(service, posted):
    from serving.audit_log import read_audit
    from serving.keys import key_id

    keys = service["keys"]
    first = post(service["url"], defect_frame(5), {**keys.header("line-L2"), "x-request-id": "camera-7.frame-1"})
    again = post(service["url"], defect_frame(6), {**keys.header("line-L2"), "x-request-id": "camera-7.frame-1"})
    refused = get(service, "/v1/decisions", key="line-L2")
    assert first.status_code == again.status_code == 200 and refused.status_code == 403
    bodies = first.json(), again.json()
    assert all(b["client_request_id"] == "camera-7.frame-1" and b["decision_log"]["status"] == "logged"
               for b in bodies)
    assert bodies[0]["request_id"] != bodies[1]["request_id"] != "camera-7.frame-1"
    assert bodies[0]["line"] == "L2"
    ids = {bodies[0]["request_id"], bodies[1]["request_id"], refused.json()["request_id"]}
    assert _eventually(lambda: ids <= {row.request_id for row in read_audit(service["folder"], 200)})
    rows = {row.request_id: row for row in read_audit(service["folder"], 200) if row.request_id in ids}
    line_key = key_id(keys.tokens["line-L2"])
    row = rows[bodies[0]["request_id"]]
    assert (row.key_id, row.role, row.method, row.route, row.status, row.client, row.reason) == (
        line_key, "line", "POST", "/v1/inspect", 200, "127.0.0.1", None)
    row = rows[refused.json()["request_id"]]
    assert (row.key_id, row.route, row.status, row.reason) == (line_key, "/v1/decisions", 403, "forbidden")


def test_a_canary_key_never_appears_in_replies_logs_the_decision_log_or_the_audit_log(service, ray_session):
    from serving.keys import add_key, read_keys_file, write_keys_file

    canary, keyset = add_key(read_keys_file(service["keys"].file), "admin", None, "canary")
    write_keys_file(service["keys"].file, keyset)
    secret = canary.split("_", 2)[2]
    bearer = {"Authorization": f"Bearer {canary}"}
    url = service["url"]
    assert _eventually(lambda: requests.get(url + "/v1/model", headers=bearer, timeout=30).status_code == 200)
    answers = [
        post(url, defect_frame(9), bearer, line="L1", part_id="CANARY-1", mask="true"),
        requests.get(url + "/v1/decisions", headers=bearer, timeout=30),
        requests.post(url + "/v1/session", headers=bearer, timeout=30),
        requests.get(url + "/v1/decisions", params={"api_key": canary}, timeout=30),  # refused: in the URL
        requests.get(url + "/v1/model", headers={"Authorization": f"Bearer {canary}x"}, timeout=30),  # malformed
        requests.get(url + "/v1/model", headers={"Authorization": f"Bearer {canary[:-1]}"}, timeout=30),
        requests.post(url + "/v1/inspect", data=b"not an image", headers={**bearer, "Content-Type": "image/png"},
                      timeout=30),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 400, 401, 401, 400]
    for answer in answers:
        assert secret not in answer.text and secret not in str(answer.headers)
    request_ids = {a.json()["request_id"] for a in answers if "request_id" in a.json()}  # inspections, refusals
    assert len(request_ids) == 5
    from serving.audit_log import read_audit

    assert _eventually(lambda: request_ids <= {row.request_id for row in read_audit(service["folder"], 500)})
    time.sleep(2)  # Serve's and Ray's log files are written asynchronously
    session_logs = Path(ray_session._private.worker._global_node.get_session_dir_path()) / "logs"
    files = [*service["folder"].iterdir(), *(f for f in session_logs.rglob("*") if f.is_file())]
    assert any(f.name.startswith("audit.sqlite") for f in files) and len(files) > 10
    leaked = [str(f) for f in files if secret.encode() in f.read_bytes()]
    assert not leaked, leaked


def test_the_attack_drivers_keyed_phases_refuse_without_touching_the_model(service, posted):
    # `posted`: the flood counts the log's decisions, so the log must exist (it does once one is logged)
    from pipelines.decision_records import DecisionReader
    from serving.attack import _unauthenticated_flood, hostile
    from serving.hostile import hostile_requests

    cases = [case for case in hostile_requests(LIMITS["max_body_bytes"]) if case.overrides_thresholds]
    per_case = hostile(service["url"], cases, total=8, clients=2, slow_seconds=0.1,  # 4 of the 8: slow bodies
                       key=service["keys"].tokens["line-L1"])
    for case in cases:  # a line key may not override: refused before the values are read
        assert dict(per_case[case.name].statuses) == {403: 2}, case.name
    reader = DecisionReader(service["folder"])
    targets = _unauthenticated_flood(service["url"], "logged", service["url"] + "/v1/inspect",
                                     encode(defect_frame(2)), rate_per_s=10, duration_s=2,
                                     decisions_made=reader.total)
    assert all(target.met for target in targets), targets


# -- reviews and the line's quality (serving.reviews; in-process: test_reviews.py) ----------------------

def review(service, request_id, body, key="operator", content_type="application/json"):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{service['url']}/v1/decisions/{request_id}/review", data=data, timeout=30,
                         headers={"Content-Type": content_type, **service["keys"].header(key)})


@pytest.fixture(scope="module")
def line_l7(service):
    """Line L7 (admin-posted, no other test's line): two NG frames, then one OK frame."""
    answers = [post(service["url"], frame, service["keys"].header("admin"), line="L7", part_id=f"Q-{index}").json()
               for index, frame in enumerate((defect_frame(11), defect_frame(12), textured(60, 90, seed=13)))]
    assert [a["decision"] for a in answers] == ["NG", "NG", "OK"]
    return [a["request_id"] for a in answers]


def test_an_operator_reviews_a_decision_and_the_log_shows_who_and_whether_it_agrees(service, line_l7):
    from serving.keys import key_id

    first, second, ok = line_l7
    assert review(service, first, {"verdict": "NG"}, key="line-L1").status_code == 403  # a line key may not
    box = {"x": 30, "y": 20, "width": 8, "height": 6}
    answer = review(service, first, {"verdict": "NG", "regions": [box], "note": "scratch, left edge"})
    assert answer.status_code == 200, answer.text
    stored = answer.json()
    operator = service["keys"].tokens["operator"]
    assert stored["reviewer"] == {"key_id": key_id(operator), "role": "operator"} and operator not in answer.text
    assert (stored["verdict"], stored["agrees"], stored["regions"], stored["note"]) == (
        "NG", True, [box], "scratch, left edge")
    flipped = review(service, second, {"verdict": "OK", "note": "dust"}, key="admin").json()
    assert (flipped["verdict"], flipped["agrees"], flipped["reviewer"]["role"]) == ("OK", False, "admin")
    assert get(service, f"/v1/decisions/{first}").json()["review"] == stored
    assert get(service, f"/v1/decisions/{ok}").json()["review"] is None

    def listed(**filters):
        return [item["request_id"] for item in get(service, "/v1/decisions", line="L7", **filters).json()["items"]]

    assert listed(reviewed="true") == [second, first] and listed(reviewed="false") == [ok]
    assert listed(disagrees="true") == [second] and listed(disagrees="false") == [first]
    not_kept = review(service, ok, {"verdict": "OK"})  # frames: ng kept no OK frame: nothing to judge
    assert not_kept.status_code == 409 and not_kept.json()["error"]["code"] == "frame_not_kept"


@pytest.mark.parametrize("body, content_type, status, code", [
    ({"verdict": "NG"}, "image/png", 415, "unsupported_content_type"),
    ("{not json", "application/json", 422, "invalid_body"),
    ({"verdict": "MAYBE"}, "application/json", 422, "invalid_body"),
    ({"verdict": "OK", "regions": [{"x": 0, "y": 0, "width": 1, "height": 1}]}, "application/json", 422,
     "invalid_body"),
    ({"verdict": "NG", "regions": [{"x": 85, "y": 0, "width": 10, "height": 10}]}, "application/json", 422,
     "region_outside_frame"),  # the frame is 90 px wide
    ({"verdict": "NG", "note": "x" * 20_000}, "application/json", 413, "body_too_large"),
])
def test_bad_reviews_get_a_clear_4xx(service, line_l7, body, content_type, status, code):
    answer = review(service, line_l7[0], body, content_type=content_type)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code


def test_a_review_of_an_unknown_or_malformed_id_is_refused(service):
    assert review(service, "no-such-request", {"verdict": "OK"}).json()["error"]["code"] == "unknown_request_id"
    assert review(service, "bad%20id", {"verdict": "OK"}).status_code == 422


def test_line_quality_counts_the_reviews_and_claims_no_rate_the_sample_cannot_support(service, line_l7):
    from scipy.stats import beta

    review(service, line_l7[0], {"verdict": "NG"})
    review(service, line_l7[1], {"verdict": "OK"})
    answer = get(service, "/v1/line-quality", line="L7")
    assert answer.status_code == 200, answer.text
    (l7,) = answer.json()["lines"]
    assert (l7["line"], l7["reviewed"], l7["reviewed_ng"], l7["disagreements"]) == ("L7", 2, 2, 1)
    assert l7["passed"]["decisions"] == 1 and l7["passed"]["reviewed"] == 0
    rejected = l7["rejected"]  # 1 of the 2 NG decisions is a good part: share 1/2, bound at 97.5 %
    assert (rejected["decisions"], rejected["reviewed"], rejected["wrong"]) == (2, 2, 0.5)
    assert rejected["upper"] == pytest.approx(beta.ppf(0.975, 2, 1))
    assert l7["escape"]["rate"] is None and "no reviewed OK frame" in l7["escape"]["note"]  # frames: ng
    everyone = get(service, "/v1/line-quality").json()["lines"]
    assert {"L1", "L2", "L7"} <= {entry["line"] for entry in everyone}
    for params in ({"line": "L 7"}, {"since": "last week"}):
        assert get(service, "/v1/line-quality", **params).status_code == 422, params


def test_a_defect_found_later_marks_the_decision_that_passed_the_part_as_an_escape(service, line_l7):
    def report(body, key="operator"):
        return requests.post(service["url"] + "/v1/escapes", json=body, headers=service["keys"].header(key),
                             timeout=30)

    assert report({"part_id": "Q-2"}, key="line-L1").status_code == 403
    answer = report({"part_id": "Q-2", "line": "L7", "note": "crack found at assembly"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["request_id"] == line_l7[2]
    assert (body["review"]["source"], body["review"]["verdict"], body["review"]["agrees"],
            body["review"]["escape_reported"]) == ("escape", "NG", False, True)
    assert get(service, f"/v1/decisions/{line_l7[2]}").json()["review"] == body["review"]
    (l7,) = get(service, "/v1/line-quality", line="L7").json()["lines"]
    assert (l7["reported_escapes"], l7["reviewed"], l7["passed"]["reviewed"]) == (1, 3, 0)  # counted, not sampled
    for bad, status, code in (({"part_id": "Q-0"}, 409, "part_was_rejected"),  # an NG decision passed nothing
                              ({"part_id": "Q-2", "line": "L1"}, 404, "unknown_part"),
                              ({"part_id": "Q 2"}, 422, "invalid_body"),
                              ({"part_id": "Q-2", "found": "yesterday"}, 422, "invalid_body")):
        answer = report(bad)
        assert answer.status_code == status and answer.json()["error"]["code"] == code, (bad, answer.text)


def test_ng_sample_keeps_every_ng_frame_and_about_the_configured_share_of_ok_frames(service):
    from pipelines.decision_records import DecisionReader

    url, posts = service["url"] + "/sampled", 120
    for index in range(posts):  # the stand-in scores a plain frame 0: far from the cut, so only the coin keeps it
        line = ("L1", "L2")[index % 2]  # two keys: each stays under its request rate
        answer = post(url, textured(24, 32, seed=index), service["keys"].header(f"line-{line}"))
        assert answer.status_code == 200 and answer.json()["decision"] == "OK", answer.text
    for index in range(4):
        assert post(url, defect_frame(index), service["keys"].header("line-L1")).json()["decision"] == "NG"
    stored = DecisionReader(service["sampled"]).page(limit=200)
    kept = [row for row in stored if row.has_frame]
    assert {(row.decision, row.reply["kept"]["reason"], row.sample_rate) for row in kept} == {
        ("OK", "sample", SAMPLE_RATE), ("NG", "ng", 1.0)}
    assert sum(row.decision == "NG" for row in kept) == 4
    sampled = sum(row.decision == "OK" for row in kept)
    assert 15 <= sampled <= 45, sampled  # 30 expected (120 x 0.25), sd 4.7: a wider miss is not chance
