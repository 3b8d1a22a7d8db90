"""``jaffnet calibrate --log``: a new version with the same weights and a rule chosen on the frames
operators reviewed, sampling-weighted (the scripted log of reviewed_log.py; no Ray, no Serve)."""

import pytest

from jaffnet.contract import InputContract
from jaffnet.decision import DecisionRule
from jaffnet.io import weights_sha256
from pipelines import registry
from pipelines.decision_records import iso_time
from tests.pipelines.evaluation import reviewed_log
from tests.pipelines.evaluation.reviewed_log import ENTRIES, NOW, REVIEWED, WEIGHTS

TARGET = 0.3


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    import mlflow

    root = tmp_path_factory.mktemp("log-recalibration")
    registry.configure_tracking(f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_experiment("log-recalibration")
    model = reviewed_log.tiny_model()
    rule = DecisionRule(pixel_threshold=0.5, image_threshold=0.99)  # passes everything
    metadata = {"input_contract": InputContract(reviewed_log.SIZE, "resize").to_dict(),
                "decision_rule": rule.to_dict(), "threshold": 0.5, "image_size": reviewed_log.SIZE}
    with mlflow.start_run():
        info = registry.log_model(model, metadata)
    version = registry.register(info.model_uri, "fromlog", tags={}, aliases=(registry.CHAMPION_ALIAS,))
    reviewed_log.write_log(root / "log")
    yield {"root": root, "log": str(root / "log"), "weights": weights_sha256(model), "version": str(version.version),
           "scores": reviewed_log.image_scores(model)}
    mlflow.set_tracking_uri(None)


def calibrate(registered, *arguments: str) -> int:
    from cli.main import main

    return main(["calibrate", "--model", "models:/fromlog@champion", "--log", registered["log"], *arguments])


def test_calibrate_from_the_log_meets_the_weighted_target_with_the_same_weights(registered, capsys):
    from mlflow import MlflowClient

    assert calibrate(registered, "--max-escape-rate", str(TARGET)) == 0
    printed = capsys.readouterr().out
    assert "same weights as models:/fromlog@champion" in printed and "effective frames" in printed
    client = MlflowClient()
    newest = str(max(int(v.version) for v in client.search_model_versions("name='fromlog'")))
    tags = client.get_model_version("fromlog", newest).tags
    assert tags["weights_sha256"] == registered["weights"] and tags["calibrated_from"] == f"fromlog/{registered['version']}"
    assert (tags["calibration_decision_log"], tags["calibration_line"], tags["calibration_reviewed_frames"]) == (
        registered["log"], "all", str(len(REVIEWED)))
    assert len(tags["calibration_reviews_sha256"]) == 64
    loaded = registry.load_model(f"models:/fromlog/{newest}")
    assert weights_sha256(loaded.model) == registered["weights"] and loaded.rule.pixel_threshold == 0.5

    # By hand: the new rule's weighted escape rate on the reviewed frames meets the target.
    cut, scores = loaded.rule.image_threshold, registered["scores"]
    defective = [i for i in REVIEWED if ENTRIES[i][3] == "NG"]
    escaped = sum(WEIGHTS[i] for i in defective if scores[i] < cut) / sum(WEIGHTS[i] for i in defective)
    assert escaped <= TARGET
    record = loaded.metadata["calibration"]
    assert record["escape_rate"] == pytest.approx(float(escaped)) and record["defective_frames"] == len(defective)
    assert record["calibration_set"]["reviews_sha256"] == tags["calibration_reviews_sha256"]
    assert str(client.get_model_version_by_alias("fromlog", "champion").version) == registered["version"]


@pytest.mark.parametrize("arguments, message", [
    (["--line", "L9"], "no reviewed kept frame"),
    (["--until", iso_time(NOW + 1)], "no OK verdict"),  # only req-0000: an NG review
    (["--line", "L2", "--since", iso_time(NOW + 12)], "no NG verdict"),  # only req-0012: an OK review
    (["--split", "val"], "--split only applies to --data"),
])
def test_a_log_selection_that_cannot_calibrate_is_refused(registered, capsys, arguments, message):
    assert calibrate(registered, *arguments) == 2
    assert message in capsys.readouterr().err


def test_a_missing_log_and_two_calibration_sets_are_refused(registered, capsys):
    from cli.main import main

    assert main(["calibrate", "--model", "models:/fromlog@champion", "--log",
                 str(registered["root"] / "nowhere")]) == 2
    assert "no decision log" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        main(["calibrate", "--model", "models:/fromlog@champion", "--log", registered["log"], "--data", "ds"])
    assert refused.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert main(["calibrate", "--model", "models:/fromlog@champion", "--data", "ds", "--line", "L1"]) == 2
    assert "--line only applies to --log" in capsys.readouterr().err
