"""Line parity: the live endpoint judges frames exactly as ``jaffnet evaluate`` scored them.

One dataset whose defect classes are frame sizes (the model's input size S, 2x S, and a
non-square frame), one tiny model registered twice (``resize`` and ``tile`` input
contracts, each with a decision rule calibrated on the val split by the training
path's own scoring), both served by the real Serve application. ``jaffnet evaluate
--model`` and ``jaffnet evaluate --endpoint`` must give the same probability maps (the
saliency metrics to 1e-4, per size and overall), the same image scores within
``SCORE_TOLERANCE``, and the same decision for every frame whose score lies farther than
that from the image threshold. Rounding differs with batch size and CPU kind, so a frame
nearer the threshold may go either way: it is reported, not compared (see
``tests/serving/test_acceptance.py`` for that case).
"""


import cv2
import numpy as np
import pytest

from tests.serving.conftest import temporary_tracking
from tests.serving.images import textured

S = 64
SIZES = {"at_s": (S, S), "twice_s": (2 * S, 2 * S), "non_square": (80, 150)}
TOLERANCE = 1e-4  # saliency metrics; exact float32 transport measured ~1e-9


def _write_source(root):
    rows = ["id,defect_class"]
    for name, (height, width) in SIZES.items():
        for i in range(10):
            image = textured(height, width, seed=100 * len(rows) + i)
            mask = np.zeros((height, width), np.uint8)
            if i >= 3:  # 3 defect-free frames per size
                rng = np.random.default_rng(i)
                top, left = int(rng.integers(0, height - 12)), int(rng.integers(0, width - 20))
                mask[top:top + 4 + i, left:left + 8 + i] = 255
                image[mask > 0] = (235, 235, 235)
            stem = f"{name}_{i}"
            (root / "images").mkdir(parents=True, exist_ok=True)
            (root / "masks").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "images" / f"{stem}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)
            rows.append(f"{stem},{name}")
    (root / "classes.csv").write_text("\n".join(rows) + "\n")
    return root


def _calibrated_metadata(model, contract, dataset):
    """The rule the training loop would store: calibrated on val through the same path."""
    from jaffnet.frames import predict_frames
    from jaffnet.inference import build_predictor
    from pipelines.data.dataset import iter_samples
    from pipelines.evaluation.scoring import score_predictions

    samples = list(iter_samples(dataset, "val"))
    probabilities = {s.id: p for s, p in predict_frames(samples, contract, build_predictor(model, "eager"))}
    rule = score_predictions(probabilities, samples).rule
    return {"input_contract": contract.to_dict(), "decision_rule": rule.to_dict(),
            "threshold": rule.pixel_threshold, "image_size": S, "model_name": "parity"}


@pytest.fixture(scope="module")
def deployed(serve_url, tmp_path_factory):
    import mlflow
    import torch
    from ray import serve

    from jaffnet import JAFFNet
    from jaffnet.contract import InputContract
    from pipelines import registry
    from pipelines.data.ingestion import ingest
    from serving.app import build_application

    root = tmp_path_factory.mktemp("parity")
    dataset = ingest(_write_source(root / "source"), root / "dataset", "folder", seed=0, val_fraction=0.3,
                     test_fraction=0.4).dataset_dir
    torch.manual_seed(0)
    model = JAFFNet(width=0.125).eval()
    with torch.no_grad():  # image scores spread over ~0.65-0.72 (gaps ~1e-3), far beyond float rounding
        model.heads.convs[-1].weight *= 20.0
    # the tile model also averages two mirrored views: the endpoint must mirror and merge them as evaluation does
    contracts = {"resize": InputContract(S, "resize"),
                 "tile": InputContract(S, "tile", tile_overlap=0.25, flip_views=2)}
    with temporary_tracking(root) as tracking_uri:
        experiment = mlflow.create_experiment("parity", artifact_location=str(root / "artifacts"))
        uris = {}
        for mode, contract in contracts.items():
            with mlflow.start_run(experiment_id=experiment):
                info = registry.log_model(model, _calibrated_metadata(model, contract, dataset))
            version = registry.register(info.model_uri, f"parity-{mode}")
            uris[mode] = f"models:/parity-{mode}/{version.version}"

        small = {"InspectionAPI": {"ray_actor_options": {"num_cpus": 0.25}},
                 "ModelDeployment": {"ray_actor_options": {"num_cpus": 0.5}}}
        for mode, uri in uris.items():
            settings = {"model_uri": uri, "tracking_uri": tracking_uri, "max_batch_size": 4,
                        "batch_wait_timeout_s": 0.01}
            serve.run(build_application(settings, small), name=f"parity-{mode}", route_prefix=f"/{mode}")
        yield {"dataset": dataset, "uris": uris, "url": serve_url, "tracking": tracking_uri}


@pytest.mark.parametrize("mode", ["resize", "tile"])
def test_endpoint_reproduces_evaluation_per_frame_size(deployed, mode):
    from pipelines.evaluation.evaluate import evaluate
    from serving.acceptance import compare_verdicts, evaluate_endpoint

    offline = evaluate(deployed["uris"][mode], deployed["dataset"], "test")
    online = evaluate_endpoint(f"{deployed['url']}/{mode}", deployed["dataset"], "test")
    assert offline.count == online.count >= 9
    assert set(offline.rows) == set(online.rows) == {*SIZES, "overall"}  # every frame size is in the test split
    assert offline.contract == online.contract and offline.contract["mode"] == mode
    assert offline.rule == online.rule and offline.rule["calibrated"]
    for name, metrics in offline.rows.items():  # saliency metrics: the probability maps agree
        served = online.rows[name]
        assert set(metrics) == set(served), name
        for key, value in metrics.items():
            assert served[key] == pytest.approx(value, abs=TOLERANCE), (mode, name, key)
    parity = compare_verdicts(offline, online)
    print(parity.describe())
    assert parity.holds, parity.describe()
    assert parity.compared >= offline.count - 2, "most frames lie far from the threshold: their decisions are compared"
    decisions = [row["decision"] for row in offline.frames]
    assert "NG" in decisions and "OK" in decisions, "the calibrated rule passes some frames and rejects others"
    if not parity.near_threshold:  # then every image-level count agrees too
        for name, metrics in offline.image_rows.items():
            for key, value in metrics.items():
                assert online.image_rows[name][key] == pytest.approx(value, abs=TOLERANCE), (mode, name, key)


def test_evaluate_cli_against_the_endpoint(deployed, capsys):
    from cli.main import main

    assert main(["evaluate", "--endpoint", f"{deployed['url']}/tile", "--data", str(deployed["dataset"])]) == 0
    out = capsys.readouterr().out
    assert "overall" in out and "escape" in out and "tile: native 64px tiles" in out and "2 mirrored views" in out
    assert main(["evaluate", "--endpoint", "http://127.0.0.1:9", "--data", str(deployed["dataset"])]) == 2
    assert "cannot read the model card" in capsys.readouterr().err
