"""``jaffnet replay``: frames the real endpoint logged, re-judged through the same path.

A tiny random-weights JAFFNet is served from a saved-model folder (no registry needed);
its decisions are logged with every frame kept. Replaying with the same model must
flip nothing; replaying with the same weights and another image threshold must flip
exactly the frames whose logged image score lies between the two thresholds.
"""

import cv2
import pytest
import requests

from jaffnet.decision import DecisionRule
from pipelines.decision_records import DecisionReader
from serving.replay import replay
from tests.serving.images import encode, textured
from tests.serving.test_service import _free_port

SIZE = 64
SHAPES = [(64, 64), (80, 120), (50, 70), (96, 64)]


def save_model(directory, model, rule: DecisionRule | None = None):
    from jaffnet.io import save_pretrained

    metadata = {"threshold": 0.5, "image_size": SIZE}  # a legacy model: resize, image threshold 0.5
    if rule is not None:
        metadata["decision_rule"] = rule.to_dict()
    save_pretrained(model, directory, metadata=metadata)
    return str(directory)


@pytest.fixture(scope="module")
def logged(ray_session, tmp_path_factory):
    from ray import serve

    from jaffnet import JAFFNet
    from serving.app import build_application

    directory = tmp_path_factory.mktemp("replay")
    model = JAFFNet(width=0.125).eval()
    served = save_model(directory / "champion", model)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = {"model_uri": served, "decision_log": {"folder": str(directory / "log"), "frames": "all"}}
    small = {"InspectionAPI": {"ray_actor_options": {"num_cpus": 0.1}},
             "ModelDeployment": {"ray_actor_options": {"num_cpus": 0.5}}}
    try:
        serve.run(build_application(settings, small), name="replay", route_prefix="/")
        replies = []
        for index in range(12):
            height, width = SHAPES[index % len(SHAPES)]
            frame = textured(height, width, seed=index)
            frame[5:15, 5:15] = 40 + 18 * index  # frames differ in more than noise
            answer = requests.post(f"http://127.0.0.1:{port}/v1/inspect", data=encode(frame),
                                   headers={"Content-Type": "image/png"}, params={"line": f"L{index % 2 + 1}"},
                                   timeout=120)
            assert answer.status_code == 200 and answer.json()["decision_log"]["status"] == "logged", answer.text
            replies.append(answer.json())
    finally:
        serve.shutdown()
    yield {"folder": directory / "log", "model": model, "served": served, "replies": replies,
           "directory": directory}


def test_the_same_model_flips_nothing(logged):
    report = replay(logged["folder"], logged["served"])
    assert report.frames == report.in_range == 12 and report.flips == []
    assert sum(row[2] for row in report.rows()) == 12
    assert "100.0 %" in report.table() and "OK->NG 0   NG->OK 0" in report.table()


def test_another_threshold_flips_exactly_the_frames_between_the_thresholds(logged, tmp_path):
    scores = sorted(reply["image_score"] for reply in logged["replies"])
    gaps = [(scores[i + 1] - scores[i], i) for i in range(2, len(scores) - 3)]
    gap, index = max(gaps)
    assert gap > 1e-5, scores  # a threshold well clear of every score (float noise cannot decide)
    threshold = (scores[index] + scores[index + 1]) / 2
    candidate = save_model(tmp_path / "candidate", logged["model"],
                           DecisionRule(pixel_threshold=0.5, image_threshold=threshold))

    report = replay(logged["folder"], candidate, overlay_dir=tmp_path / "flips")

    def verdict(score, limit):
        return "NG" if score >= limit else "OK"

    expected = {reply["request_id"]: f"{reply['decision']}->{verdict(reply['image_score'], threshold)}"
                for reply in logged["replies"] if reply["decision"] != verdict(reply["image_score"], threshold)}
    assert {flip.stored.request_id: flip.transition for flip in report.flips} == expected and expected
    for flip in report.flips:
        assert flip.stored.request_id in report.table()
        overlay = cv2.imread(str(tmp_path / "flips" / f"{flip.stored.request_id}_{flip.transition.replace('->', '-to-')}.png"))
        stored = logged["replies"][[r["request_id"] for r in logged["replies"]].index(flip.stored.request_id)]
        assert overlay.shape[:2] == (stored["image"]["height"], stored["image"]["width"])


def test_the_command_filters_by_time_and_line(logged, capsys):
    from cli.main import main

    assert main(["replay", "--log", str(logged["folder"]), "--model", logged["served"], "--line", "L1"]) == 0
    out = capsys.readouterr().out
    assert "replayed 6 logged frames" in out and "L2" not in out.split("\n", 1)[1]
    assert main(["replay", "--log", str(logged["folder"]), "--model", logged["served"],
                 "--since", "2999-01-01T00:00:00"]) == 0
    assert "replayed 0 logged frames" in capsys.readouterr().out
    assert main(["replay", "--log", str(logged["directory"] / "nowhere"), "--model", logged["served"]]) == 2
    assert "no decision log" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["replay", "--log", str(logged["folder"]), "--model", logged["served"], "--since", "last tuesday"])


def test_frames_the_log_did_not_keep_are_counted_not_replayed(logged, tmp_path):
    import shutil
    import sqlite3

    copy = tmp_path / "log"
    shutil.copytree(logged["folder"], copy)
    with sqlite3.connect(copy / "decisions.sqlite") as connection:
        connection.execute("DELETE FROM frames WHERE seq IN (SELECT seq FROM decisions WHERE line = 'L2')")
    report = replay(copy, logged["served"])
    assert (report.frames, report.in_range) == (6, 12)
    assert "6 record(s) in range kept no frame" in report.table()
    assert DecisionReader(copy).total() == 12
