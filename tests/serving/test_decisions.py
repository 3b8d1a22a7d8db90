"""The decision log through the real service: /v1/inspect records, the read API serves.

Serve runs in-process on a free localhost port with the bright-spot stand-in model
(white pixels are the defect), so every decision is known in advance.
"""

import time

import cv2
import numpy as np
import pytest
import requests

from tests.serving.images import encode, textured
from tests.serving.stand_ins import bright_spot_model
from tests.serving.test_service import _free_port

LIMITS = {"max_body_bytes": 1024 * 1024, "max_pixels": 500_000, "max_inputs_per_frame": 64, "min_frame_side": 8}


def deploy_logged_app(name: str, route_prefix: str, log: dict) -> None:
    from ray import serve

    from serving.api import InspectionAPI

    settings = {"model_uri": "unused", **LIMITS, "decision_log": log}
    model = bright_spot_model().options(ray_actor_options={"num_cpus": 0.1}, name=f"{name}-model").bind()
    serve.run(InspectionAPI.options(ray_actor_options={"num_cpus": 0.1}).bind(model, settings), name=name,
              route_prefix=route_prefix)


@pytest.fixture(scope="module")
def service(ray_session, tmp_path_factory):
    from ray import serve

    directory = tmp_path_factory.mktemp("decision-log")
    blocker = directory / "a-file"
    blocker.write_text("the broken app's log folder would have to be inside this file")
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    logged = {"folder": str(directory / "log"), "frames": "ng"}
    try:
        deploy_logged_app("logged", "/", logged)
        deploy_logged_app("broken", "/broken", {"folder": str(blocker / "log")})
        yield {"url": f"http://127.0.0.1:{port}", "folder": directory / "log", "log": logged}
    finally:
        serve.shutdown()


def defect_frame(seed: int, height: int = 60, width: int = 90) -> np.ndarray:
    frame = textured(height, width, seed=seed)
    frame[10 + seed % 20:16 + seed % 20, 30:38] = 255  # a 6 x 8 px defect
    return frame


def post(url: str, frame: np.ndarray, **params) -> requests.Response:
    return requests.post(url + "/v1/inspect", data=encode(frame), headers={"Content-Type": "image/png"},
                         params=params, timeout=60)


@pytest.fixture(scope="module")
def posted(service):
    """Three NG and three OK frames on two lines, oldest first."""
    answers = []
    for index in range(6):
        frame = defect_frame(index) if index % 2 == 0 else textured(60, 90, seed=index)
        answer = post(service["url"], frame, line=f"L{index % 2 + 1}", station="cam-2", part_id=f"P-{index:03d}")
        assert answer.status_code == 200, answer.text
        answers.append((frame, answer.json()))
    return answers


def get(service, path, **params):
    return requests.get(service["url"] + path, params=params, timeout=30)


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
    stored = cv2.imdecode(np.frombuffer(requests.get(service["url"] + detail["links"]["frame_png"], timeout=30).content,
                                        np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB), frame)
    mask = cv2.imdecode(np.frombuffer(requests.get(service["url"] + detail["links"]["mask_png"], timeout=30).content,
                                      np.uint8), cv2.IMREAD_GRAYSCALE)
    assert int((mask > 0).sum()) == 48
    overlay = requests.get(service["url"] + detail["links"]["overlay_png"], timeout=30)
    assert overlay.headers["content-type"] == "image/png"
    pixels = cv2.imdecode(np.frombuffer(overlay.content, np.uint8), cv2.IMREAD_COLOR)
    assert pixels.shape == (60, 90, 3) and pixels[14, 33].tolist() != [255, 255, 255]  # tinted red
    small = requests.get(service["url"] + detail["links"]["overlay_png"], params={"max_side": 45}, timeout=30)
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
])
def test_bad_read_requests_get_a_4xx_json_error(service, posted, path, params, status, code):
    answer = get(service, path, **params)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code


def test_bad_client_fields_are_refused_before_the_frame_is_read(service):
    for params in ({"line": "L1;DROP"}, {"station": ""}, {"part_id": "p" * 65}):
        answer = post(service["url"], textured(32, 32), **params)
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_parameter", params


def test_a_broken_store_does_not_fail_the_inspection(service):
    answer = post(service["url"] + "/broken", defect_frame(0), line="L9")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["decision"] == "NG" and body["line"] == "L9"
    assert body["decision_log"]["status"] == "not_logged" and "store failed" in body["decision_log"]["reason"]
    assert get(service, "/broken/v1/decisions").status_code == 404


def test_the_log_survives_a_restart_of_the_ingress(service, posted):
    from ray import serve

    before = [item["request_id"] for item in get(service, "/v1/decisions").json()["items"]]
    serve.delete("logged")
    deploy_logged_app("logged", "/", service["log"])
    after = post(service["url"], defect_frame(7), line="L1").json()
    assert after["decision_log"] == {"status": "logged"}
    items = [item["request_id"] for item in get(service, "/v1/decisions").json()["items"]]
    assert items == [after["request_id"]] + before


def test_decisions_and_the_log_are_exported_as_prometheus_metrics(service, posted):
    import ray

    assert post(service["url"] + "/broken", defect_frame(1)).json()["decision_log"]["status"] == "not_logged"
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
