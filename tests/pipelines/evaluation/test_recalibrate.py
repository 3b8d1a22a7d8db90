"""``jaffnet calibrate``: a new version with the same weights and a rule for the target."""

import json

import pytest
import torch

from jaffnet import JAFFNet
from jaffnet.contract import InputContract
from jaffnet.decision import DecisionRule
from jaffnet.io import weights_sha256
from pipelines import registry
from tests.datasets import make_tiny_dataset


@pytest.fixture(scope="module")
def registered(ray_session, tmp_path_factory):
    import mlflow

    root = tmp_path_factory.mktemp("recalibration")
    dataset = make_tiny_dataset(root, count=40)
    registry.configure_tracking(f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_experiment("recalibration")
    torch.manual_seed(0)
    model = JAFFNet(width=0.125).eval()
    with torch.no_grad():  # image scores spread well beyond float rounding
        model.heads.convs[-1].weight *= 20.0
    rule = DecisionRule(pixel_threshold=0.7, image_threshold=0.99)  # passes nearly everything
    metadata = {"input_contract": InputContract(64, "resize").to_dict(), "decision_rule": rule.to_dict(),
                "threshold": 0.7, "image_size": 64}
    with mlflow.start_run():
        info = registry.log_model(model, metadata)
    version = registry.register(info.model_uri, "recal", tags={"val_weighted_f": "0.5"},
                                aliases=(registry.CHAMPION_ALIAS,))
    yield {"root": root, "dataset": dataset, "weights": weights_sha256(model), "version": str(version.version)}
    mlflow.set_tracking_uri(None)


def test_calibrate_registers_the_same_weights_with_a_rule_for_the_target(registered, capsys):
    from mlflow import MlflowClient

    from cli.main import main
    from pipelines.evaluation.evaluate import evaluate

    out = registered["root"] / "report"
    assert main(["calibrate", "--model", "models:/recal@champion", "--data", str(registered["dataset"]),
                 "--max-escape-rate", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "same weights as models:/recal@champion" in printed and "WARNING" in printed  # val is far too small
    client = MlflowClient()
    newest = max(int(v.version) for v in client.search_model_versions("name='recal'"))
    assert str(newest) != registered["version"]
    tags = client.get_model_version("recal", str(newest)).tags
    assert tags["calibrated_from"] == f"recal/{registered['version']}" and tags["calibrate_for"] == "max_escape_rate"
    assert tags["weights_sha256"] == registered["weights"] and tags["calibration_split"] == "val"
    assert float(tags["calibration_escape_upper95"]) > 0.05  # a handful of defective frames bound nothing tightly
    assert str(client.get_model_version_by_alias("recal", "champion").version) == registered["version"]  # no move

    loaded = registry.load_model(f"models:/recal/{newest}")
    assert weights_sha256(loaded.model) == registered["weights"]
    assert loaded.rule.pixel_threshold == 0.7 and loaded.rule.image_threshold < 0.99
    record = loaded.metadata["calibration"]
    assert record["escapes"] == 0 and record["warnings"] and record["calibration_set"]["split"] == "val"
    # recomputed through evaluate: the stored rule escapes nothing on val
    val = evaluate(f"models:/recal/{newest}", registered["dataset"], "val")
    assert all(row["decision"] == "NG" for row in val.frames if row["label"] == "NG")
    assert val.image_rows["overall"]["escape_rate"] == 0.0
    assert (out / "frames.csv").is_file()
    assert json.loads((out / "operating_table.json").read_text())


def test_calibrate_promotes_only_when_asked(registered):
    from mlflow import MlflowClient

    from cli.main import main

    assert main(["calibrate", "--model", f"models:/recal/{registered['version']}", "--data",
                 str(registered["dataset"]), "--escape-cost", "2", "--promote"]) == 0
    champion = MlflowClient().get_model_version_by_alias("recal", "champion")
    assert str(champion.version) != registered["version"] and champion.tags["calibrate_for"] == "escape_cost"


@pytest.mark.parametrize("arguments, message", [
    (["--max-escape-rate", "1.5"], "max_escape_rate must be a rate in [0, 1)"),
    (["--max-escape-rate", "0.05", "--max-overkill-rate", "0.1"], None),  # argparse: not allowed together
    (["--split", "train", "--min-defect-area-px", "-1"], "min_defect_area_px must be an int >= 0"),
])
def test_bad_targets_are_clear_errors(registered, capsys, arguments, message):
    from cli.main import main

    command = ["calibrate", "--model", "models:/recal@champion", "--data", str(registered["dataset"]), *arguments]
    if message is None:
        with pytest.raises(SystemExit):
            main(command)
        return
    assert main(command) == 2
    assert message in capsys.readouterr().err


def test_only_registered_versions_and_usable_splits_are_calibrated(registered, tmp_path):
    from pipelines.evaluation.recalibrate import recalibrate
    from pipelines.evaluation.calibration import Objective

    objective = Objective("max_escape_rate", 0.05)
    with pytest.raises(ValueError, match="give models:/NAME@ALIAS"):
        recalibrate(str(tmp_path), registered["dataset"], objective=objective)
    with pytest.raises(FileNotFoundError):
        recalibrate("models:/recal@champion", tmp_path / "nothing", objective=objective)
