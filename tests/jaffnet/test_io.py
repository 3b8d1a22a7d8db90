import json

import pytest
import torch

from jaffnet import JAFFNet
from jaffnet.io import WeightsError, load_encoder_weights, load_pretrained, read_config, save_pretrained


def _trained_like(model):
    # Non-default BN statistics and alpha so the round trip checks buffers too.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.9, 1.1)
        for stage in model.decoder.stages:
            stage.jaff.alpha.fill_(0.3)
    return model.eval()


def test_round_trip_gives_identical_outputs(tmp_path):
    model = _trained_like(JAFFNet(width=0.125, dilation_rates=(1, 3, 5, 7)))
    save_pretrained(model, tmp_path / "m", metadata={"threshold": 0.42})
    loaded = load_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    assert read_config(tmp_path / "m")["metadata"] == {"threshold": 0.42}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("content", [b"", b"not a safetensors file at all", b"\xff" * 64])
def test_corrupt_weights_are_rejected(tmp_path, content):
    save_pretrained(JAFFNet(width=0.125), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(content)
    with pytest.raises(WeightsError, match="safetensors"):
        load_pretrained(tmp_path)


def test_weights_of_another_config_are_rejected_with_key_names(tmp_path):
    save_pretrained(JAFFNet(width=0.125), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model"]["width"] = 0.25
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"shape mismatches: bridge.*\(336 in all\)"):
        load_pretrained(tmp_path)


def test_missing_files_and_bad_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(WeightsError, match="JSON"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model": {"bogus": 1}}))
    with pytest.raises(WeightsError, match="unknown model argument"):
        load_pretrained(tmp_path)


def _torchvision_like_state(model):
    """A torchvision resnet18-format state_dict built from our own stages."""
    state = {f"{k}": v.clone() + 1.0 for k, v in model.encoder.state_dict().items() if k.startswith("layer") and not k.startswith("layer5")}
    state["conv1.weight"] = torch.zeros(64, 3, 7, 7)
    state["fc.weight"] = torch.zeros(1000, 512)
    return state


def test_encoder_initialisation_from_local_torchvision_file(tmp_path):
    model = JAFFNet(width=0.125)
    state = _torchvision_like_state(model)
    torch.save(state, tmp_path / "resnet18.pth")
    load_encoder_weights(model, tmp_path / "resnet18.pth")
    assert torch.equal(model.encoder.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])


def test_encoder_file_mismatches_are_named(tmp_path):
    model = JAFFNet(width=0.125)
    state = _torchvision_like_state(model)
    del state["layer3.1.bn2.weight"]
    state["layer4.1.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"missing keys: layer3\.1\.bn2\.weight.*shape mismatches: layer4\.1\.conv1"):
        load_encoder_weights(model, tmp_path / "bad.pth")
    torch.save({"backbone.weight": torch.zeros(1)}, tmp_path / "foreign.pth")
    with pytest.raises(WeightsError, match="not a torchvision ResNet"):
        load_encoder_weights(model, tmp_path / "foreign.pth")


class Arbitrary:
    """Any non-tensor class: unpickling it would run import-time code of the sender's choosing."""


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"layer1.0.conv1.weight": Arbitrary()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="weights-only"):
        load_encoder_weights(JAFFNet(width=0.125), tmp_path / "evil.pth")
    (tmp_path / "garbage.pth").write_bytes(b"garbage")
    with pytest.raises(WeightsError):
        load_encoder_weights(JAFFNet(width=0.125), tmp_path / "garbage.pth")


def test_models_saved_with_the_old_in_channels_argument_still_load(tmp_path):
    model = JAFFNet(width=0.125).eval()
    save_pretrained(model, tmp_path / "rgb")
    config_path = tmp_path / "rgb" / "config.json"
    config = json.loads(config_path.read_text())
    config["model"]["in_channels"] = 3  # what every model saved before 1-channel input was dropped holds
    config_path.write_text(json.dumps(config))
    assert load_pretrained(tmp_path / "rgb").config == model.config
    config["model"]["in_channels"] = 1
    config_path.write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="1-channel"):
        load_pretrained(tmp_path / "rgb")
