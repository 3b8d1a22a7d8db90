"""The loop from the line, end to end, through the real Serve app (the README walks the same).

A tiny registered JAFFNet serves with keys and ``frames: ng+sample`` (every OK frame sampled:
``ok_sample_rate`` 1). A line key posts the val and test frames of a tiny dataset; an operator
key reviews each kept frame with its true verdict (NG with the bounding box of its mask).
Then, from the log alone:

- ``GET /v1/line-quality`` equals a hand count of the logged decisions against the truth;
- ``jaffnet replay --reviewed`` reports the same escapes and overkill for the logged model;
- ``jaffnet calibrate --log`` registers the same weights with a cut that meets the target on the
  reviewed frames;
- ``jaffnet ingest --format decision-log`` makes a dataset of the reviewed frames (masks from the
  operator's boxes), and ``jaffnet train --data base --data line`` trains on both and registers.

The review page itself is driven in Chromium by tests/serving/test_operator_page.py.
"""

import re

import cv2
import numpy as np
import pytest
import requests

from tests.serving.conftest import temporary_tracking, write_api_keys
from tests.serving.images import encode

MODEL = "jaffnet-line"
ESCAPE_TARGET = 0.2


@pytest.fixture(scope="module")
def line(serve_url, tmp_path_factory):
    from ray import serve

    from pipelines.data.dataset import iter_samples
    from serving.app import build_application
    from tests.datasets import make_tiny_dataset
    from tests.pipelines.test_int8_export import register_tiny_model

    workdir = tmp_path_factory.mktemp("line-loop")
    base = make_tiny_dataset(workdir, count=30, size=64)
    samples = [*iter_samples(base, "val"), *iter_samples(base, "test")]
    with temporary_tracking(workdir) as tracking:
        uri = register_tiny_model([base], name=MODEL, experiment="line-loop")
        keys = write_api_keys(workdir)
        url = serve_url
        settings = {"model_uri": uri, "tracking_uri": tracking, "access": {"keys_file": str(keys.file)},
                    "decision_log": {"folder": str(workdir / "log"), "frames": "ng+sample", "ok_sample_rate": 1.0}}
        small = {"InspectionAPI": {"ray_actor_options": {"num_cpus": 0.1}},
                 "ModelDeployment": {"ray_actor_options": {"num_cpus": 0.5}}}
        try:
            serve.run(build_application(settings, small), name="line", route_prefix="/")
            frames = []
            for sample in samples:
                answer = requests.post(f"{url}/v1/inspect", data=encode(sample.image), params={"part_id": sample.id},
                                       headers={"Content-Type": "image/png", **keys.header("line-L1")}, timeout=120)
                assert answer.status_code == 200, answer.text
                frames.append((sample, answer.json()))
            first = frames[0][1]["request_id"]
            refused = requests.post(f"{url}/v1/decisions/{first}/review", json={"verdict": "OK"},
                                    headers=keys.header("line-L1"), timeout=30)
            assert refused.status_code == 403  # a line posts frames; operators judge them
            for sample, reply in frames:
                answer = requests.post(f"{url}/v1/decisions/{reply['request_id']}/review", json=verdict_of(sample),
                                       headers=keys.header("operator"), timeout=30)
                assert answer.status_code == 200, answer.text
            quality = requests.get(f"{url}/v1/line-quality", headers=keys.header("operator"), timeout=30).json()
        finally:
            serve.delete("line")  # the log is what the tests read
        yield {"workdir": workdir, "base": base, "uri": uri, "tracking": tracking, "log": workdir / "log",
               "frames": frames, "quality": quality}


def verdict_of(sample) -> dict:
    """What an operator at the page would say: NG with a box around the defect, or OK."""
    defect = (sample.mask > 0).astype(np.uint8)
    if not defect.any():
        return {"verdict": "OK"}
    x, y, width, height = cv2.boundingRect(defect)
    return {"verdict": "NG", "regions": [{"x": x, "y": y, "width": width, "height": height}]}


def hand_count(frames) -> dict:
    truth_ng = [verdict_of(sample)["verdict"] == "NG" for sample, _ in frames]
    judged_ng = [reply["decision"] == "NG" for _, reply in frames]
    return {"escapes": sum(t and not j for t, j in zip(truth_ng, judged_ng)), "defective": sum(truth_ng),
            "overkill": sum(j and not t for t, j in zip(truth_ng, judged_ng)),
            "good": sum(not t for t in truth_ng)}


def test_line_quality_and_replay_against_the_reviews_equal_a_hand_count(line, capsys):
    from cli.main import main

    count = hand_count(line["frames"])
    assert count["defective"] and count["good"]  # both kinds were posted and reviewed
    [l1] = line["quality"]["lines"]
    assert l1["line"] == "L1" and l1["reviewed"] == len(line["frames"])
    # Every frame kept (sample rate 1) and reviewed: the estimates are the plain rates.
    assert l1["escape"]["rate"] == pytest.approx(count["escapes"] / count["defective"])
    assert l1["overkill"]["rate"] == pytest.approx(count["overkill"] / count["good"])

    assert main(["replay", "--log", str(line["log"]), "--model", line["uri"], "--reviewed",
                 "--tracking-uri", line["tracking"]]) == 0
    table = capsys.readouterr().out
    escapes, overkill = f"{count['escapes']}/{count['defective']}", f"{count['overkill']}/{count['good']}"
    for model in ("logged", "candidate"):  # the same model: the same errors
        row = next(text for text in table.splitlines() if text.split()[:2] == ["all", model])
        assert re.findall(r"\d+/\d+", row) == [escapes, overkill], table


def test_calibrating_on_the_reviews_registers_the_same_weights_meeting_the_target(line, capsys):
    from cli.main import main
    from jaffnet.io import weights_sha256
    from pipelines import registry

    with temporary_tracking(line["workdir"]):
        assert main(["calibrate", "--model", line["uri"], "--log", str(line["log"]), "--max-escape-rate",
                     str(ESCAPE_TARGET)]) == 0
        printed = capsys.readouterr().out
        source = registry.load_model(line["uri"])
        calibrated = registry.load_model(f"models:/{MODEL}/2")
    assert "registered models:/jaffnet-line/2 (same weights" in printed
    assert weights_sha256(calibrated.model) == weights_sha256(source.model)
    cut = calibrated.rule.image_threshold
    scores = {reply["request_id"]: reply["image_score"] for _, reply in line["frames"]}
    defective = [reply for sample, reply in line["frames"] if verdict_of(sample)["verdict"] == "NG"]
    escaped = sum(scores[reply["request_id"]] < cut for reply in defective)
    assert escaped / len(defective) <= ESCAPE_TARGET  # the target holds on the reviewed frames
    record = calibrated.metadata["calibration"]
    assert record["calibration_set"]["decision_log"] == str(line["log"])
    assert int(record["calibration_set"]["reviewed_frames"]) == len(line["frames"])


def test_the_reviewed_frames_become_a_dataset_that_trains_with_the_base_data(line, capsys):
    from cli.main import main
    from pipelines.data.dataset import iter_samples, read_manifest
    from tests.pipelines.training.test_training_run import TINY

    line_data = line["workdir"] / "line-data"
    assert main(["ingest", str(line["log"]), "--format", "decision-log", "--out", str(line_data)]) == 0
    manifest = read_manifest(line_data)
    assert manifest["num_samples"] == len(line["frames"])
    truth = {reply["request_id"]: verdict_of(sample) for sample, reply in line["frames"]}
    for split in ("train", "val", "test"):
        for sample in iter_samples(line_data, split):
            verdict = truth[sample.id]
            assert sample.defect_class == "L1"
            if verdict["verdict"] == "OK":
                assert not sample.mask.any()
            else:  # the operator's box, filled
                [box] = verdict["regions"]
                assert (sample.mask > 0).sum() == box["width"] * box["height"]
    capsys.readouterr()

    settings = [arg for arg in TINY if not arg.startswith(("num_workers", "cpus_per_worker", "model_name"))]
    overrides = [value for setting in [*settings, "epochs=1", "num_workers=1", "num_overlays=0",
                                       f"storage_path={line['workdir'] / 'ray_results'}", f"model_name={MODEL}",
                                       "experiment=line-retrain"] for value in ("--set", setting)]
    assert main(["train", "--data", str(line["base"]), "--data", str(line_data), *overrides,
                 "--tracking-uri", line["tracking"]]) == 0
    assert f"registered models:/{MODEL}/" in capsys.readouterr().out
    with temporary_tracking(line["workdir"]):
        from mlflow import MlflowClient

        latest = max(MlflowClient().search_model_versions(f"name = '{MODEL}'"), key=lambda v: int(v.version))
        params = MlflowClient().get_run(latest.run_id).data.params
    assert params["data.0.dir"] == str(line["base"]) and params["data.1.dir"] == str(line_data)
    assert params["data.1.rows.train"] == str(manifest["totals"]["train"])  # the mix, recorded
