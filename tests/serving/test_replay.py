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
from serving.replay import replay, replay_reviewed
from tests.serving.images import encode, textured

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
def logged(serve_url, tmp_path_factory):
    from ray import serve

    from jaffnet import JAFFNet
    from serving.app import build_application

    directory = tmp_path_factory.mktemp("replay")
    model = JAFFNet(width=0.125).eval()
    served = save_model(directory / "champion", model)
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
            answer = requests.post(f"{serve_url}/v1/inspect", data=encode(frame),
                                   headers={"Content-Type": "image/png"}, params={"line": f"L{index % 2 + 1}"},
                                   timeout=120)
            assert answer.status_code == 200 and answer.json()["decision_log"]["status"] == "logged", answer.text
            replies.append(answer.json())
    finally:
        serve.delete("replay")  # the log is what the tests read
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


# -- --reviewed: against the operators' verdicts (a scripted log, no Serve) ---------------------------------

@pytest.fixture(scope="module")
def reviewed(tmp_path_factory):
    from tests.pipelines.evaluation import reviewed_log

    directory = tmp_path_factory.mktemp("reviewed")
    model = reviewed_log.tiny_model()
    reviewed_log.write_log(directory / "log")
    yield {"folder": directory / "log", "model": model, "scores": reviewed_log.image_scores(model),
           "directory": directory}


def test_reviewed_replay_counts_escapes_and_overkill_against_the_verdicts(reviewed, capsys):
    from cli.main import main
    from tests.pipelines.evaluation.reviewed_log import ENTRIES, REVIEWED, WEIGHTS

    scores = reviewed["scores"]
    ordered = sorted(scores[i] for i in REVIEWED)
    threshold = (ordered[3] + ordered[4]) / 2  # the candidate rejects the four highest-scoring reviewed frames
    assert ordered[4] - ordered[3] > 1e-5, ordered
    candidate = save_model(reviewed["directory"] / "candidate", reviewed["model"],
                           DecisionRule(pixel_threshold=0.5, image_threshold=threshold))

    report = replay_reviewed(reviewed["folder"], candidate)

    def by_hand(judged_ng, lines):
        """(escapes, defective, weighted escape rate, overkill, good, weighted overkill rate)."""
        frames = [i for i in REVIEWED if ENTRIES[i][0] in lines]
        defective = [i for i in frames if ENTRIES[i][3] == "NG"]
        good = [i for i in frames if ENTRIES[i][3] == "OK"]
        escapes = [i for i in defective if not judged_ng(i)]
        overkill = [i for i in good if judged_ng(i)]
        return (len(escapes), len(defective), float(sum(WEIGHTS[i] for i in escapes) / sum(WEIGHTS[i] for i in defective)),
                len(overkill), len(good), float(sum(WEIGHTS[i] for i in overkill) / sum(WEIGHTS[i] for i in good)))

    def measured(errors):
        return (errors.escape.errors, errors.escape.frames, errors.escape.rate, errors.overkill.errors,
                errors.overkill.frames, errors.overkill.rate)

    figures = report.figures()
    for line, lines in (("L1", {"L1"}), ("L2", {"L2"}), ("all", {"L1", "L2"})):
        logged, judged = figures[line]
        assert measured(logged) == pytest.approx(by_hand(lambda i: ENTRIES[i][1] == "NG", lines))
        assert measured(judged) == pytest.approx(by_hand(lambda i: scores[i] >= threshold, lines))
    assert (report.in_range, report.sample.unreviewed, report.sample.reported_escapes) == (14, 5, 1)

    assert main(["replay", "--log", str(reviewed["folder"]), "--model", candidate, "--reviewed", "--line", "L2"]) == 0
    out = capsys.readouterr().out
    assert "replayed 2 reviewed frames" in out and "skipped 1 kept frame(s) nobody reviewed" in out
    assert "L1" not in out and "candidate" in out and "logged" in out
    assert main(["replay", "--log", str(reviewed["folder"]), "--model", candidate, "--reviewed",
                 "--overlay-dir", str(reviewed["directory"] / "flips")]) == 2
    assert "--overlay-dir" in capsys.readouterr().err
