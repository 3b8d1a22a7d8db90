"""``encoder_weights: imagenet``: torchvision's file through torch's hub cache, never the network in tests."""

import hashlib
import urllib.error

import pytest
import torch

from jaffnet import JAFFNet
from jaffnet.encoders import pretrained
from jaffnet.io import WeightsError, load_encoder_weights


def _offline(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


@pytest.fixture()
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # get_dir() reads TORCH_HOME unless set_dir was called
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    return tmp_path / "torch"


def _plant(model: JAFFNet, torch_home, monkeypatch) -> tuple[dict, str]:
    """A torchvision-format ResNet-18 state dict saved in the hub cache under a name whose hash
    prefix is its own (as torchvision names its files)."""
    state = {k: v.clone() + 0.5 for k, v in model.encoder.state_dict().items()
             if k.startswith(("layer1", "layer2", "layer3", "layer4"))}
    state["conv1.weight"] = torch.zeros(64, 3, 7, 7)
    state["fc.weight"] = torch.zeros(1000, 512)
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / "staging.pth")
    digest = hashlib.sha256((folder / "staging.pth").read_bytes()).hexdigest()
    name = f"resnet18-{digest[:8]}.pth"
    (folder / "staging.pth").rename(folder / name)
    monkeypatch.setitem(pretrained._FILES, 18, name)
    return state, digest


def test_offline_and_not_cached_names_the_file_and_the_folder(torch_home):
    with pytest.raises(pretrained.PretrainedWeightsUnavailable) as error:
        load_encoder_weights(JAFFNet(), "imagenet")
    message = str(error.value)
    assert "resnet18-f37072fd.pth" in message and str(torch_home / "hub" / "checkpoints") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message


def test_a_cached_file_is_hash_checked_loaded_and_recorded(torch_home, monkeypatch):
    model = JAFFNet()
    state, digest = _plant(model, torch_home, monkeypatch)
    provenance = load_encoder_weights(model, "imagenet")
    assert provenance == {"encoder_weights": f"imagenet:resnet18-{digest[:8]}.pth", "encoder_weights_sha256": digest}
    assert torch.equal(model.encoder.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    # a file that is not what its name promises is refused, not used
    monkeypatch.setitem(pretrained._FILES, 18, "resnet18-00000000.pth")
    (torch_home / "hub" / "checkpoints" / f"resnet18-{digest[:8]}.pth").rename(
        torch_home / "hub" / "checkpoints" / "resnet18-00000000.pth")
    with pytest.raises(ValueError, match="does not start with 00000000"):
        load_encoder_weights(JAFFNet(), "imagenet")


def test_imagenet_fits_only_the_full_width_resnet_18_and_34(torch_home):
    from pipelines.training.config import load_config

    assert load_config(None, ["encoder_weights=imagenet", "encoder_depth=34"]).encoder_weights == "imagenet"
    with pytest.raises(ValueError, match="imagenet must go with width 1.0"):
        load_config(None, ["width=0.125", "encoder_weights=imagenet"])
    with pytest.raises(WeightsError, match="full-width encoder"):
        load_encoder_weights(JAFFNet(width=0.125), "imagenet")
