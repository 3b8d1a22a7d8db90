import pytest
import torch

from jaffnet import JAFFNet
from jaffnet.authors_weights import AuthorsWeightsError, from_authors_state_dict, load_authors_weights
from jaffnet.io import WeightsError
from tests.authors_naming import randomize, to_authors_naming

SMALL = {"width": 0.125}

# Read off the authors' models/JAFFNet.py for the full-size model (JAFFNet() there takes no arguments).
AUTHORS_SHAPES = {
    "inconv.0.weight": (64, 3, 3, 3),
    "encoder1.1.bn2.num_batches_tracked": (),
    "encoder2.0.downsample.0.weight": (128, 64, 1, 1),
    "encoder4.0.downsample.1.running_var": (512,),
    "encoder5.1.conv1.weight": (512, 512, 3, 3),
    "encoder5.2.bn2.bias": (512,),
    "bridge.mrf1.conv1.0.weight": (128, 512, 1, 1),
    "bridge.mrf2.conv3.3.weight": (128, 128, 3, 3),
    "bridge.mrf3.conv2.4.running_mean": (128,),
    "bridge.mrf3.pro.0.weight": (512, 384, 1, 1),
    "bridge.conv4.0.weight": (512, 512, 1, 1),
    "bridge.pro.1.num_batches_tracked": (),
    "jaff1.alpha": (1,),
    "jaff1.conv_a.0.weight": (512, 512, 1, 1),
    "jaff3.conv1.0.weight": (16, 256, 1, 1),
    "jaff3.conv3.0.weight": (256, 16, 1, 1),
    "jaff4.spatial_net.0.weight": (64, 2, 3, 3),
    "jaff4.spatial_net.2.weight": (1, 64, 3, 3),
    "jaff4.pro.0.weight": (128, 1, 3, 3),
    "decoder5_g.0.weight": (512, 1024, 3, 3),
    "decoder4_g.3.weight": (256, 512, 3, 3),
    "decoder2_g.4.running_var": (64,),
    "outconv6.weight": (1, 512, 3, 3),
    "outconv2.bias": (1,),
}
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def outputs(model, x):
    with torch.no_grad():
        return model(x, side_outputs=True)


def test_full_size_key_set_matches_the_authors_model():
    model = randomize(JAFFNet())
    theirs = to_authors_naming(model.state_dict())
    assert len(theirs) == 408
    for key, shape in AUTHORS_SHAPES.items():
        assert tuple(theirs[key].shape) == shape, key
    assert sum(v.numel() for k, v in theirs.items() if not k.endswith(BUFFERS)) == 41_938_313
    assert {k.split(".")[0] for k in theirs} == {
        "inconv", "bridge", *(f"encoder{n}" for n in range(1, 6)), *(f"jaff{n}" for n in range(1, 5)),
        *(f"decoder{n}_g" for n in range(2, 6)), *(f"outconv{n}" for n in range(2, 7))}

    ours = from_authors_state_dict(theirs)  # default config: the authors' JAFFNet()
    assert ours.keys() == model.state_dict().keys()
    loaded = load_authors_weights(theirs)
    x = torch.randn(1, 3, 32, 32)
    assert all(torch.equal(a, b) for a, b in zip(outputs(loaded, x), outputs(model, x)))


def test_round_trip_gives_identical_outputs_and_buffers():
    model = randomize(JAFFNet(**SMALL))
    loaded = load_authors_weights(to_authors_naming(model.state_dict()), config=model.config)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(2, 3, 32, 32)
    expected = outputs(model, x)
    assert expected[0].std() > 1  # the signal reaches the prediction
    assert all(torch.equal(a, b) for a, b in zip(outputs(loaded, x), expected))


def test_swapping_two_same_shape_modules_is_visible_in_the_outputs():
    # The round trip above would catch a mapping that mixes up jaff1/jaff2 (both 512 channels).
    model = randomize(JAFFNet(**SMALL))
    theirs = to_authors_naming(model.state_dict())
    swapped = {k.replace("jaff1.", "jaffX.").replace("jaff2.", "jaff1.").replace("jaffX.", "jaff2."): v
               for k, v in theirs.items()}
    wrong = load_authors_weights(swapped, config=model.config)
    x = torch.randn(1, 3, 32, 32)
    assert not torch.equal(outputs(wrong, x)[0], outputs(model, x)[0])


def test_data_parallel_prefix_is_accepted():
    model = randomize(JAFFNet(**SMALL))
    theirs = {f"module.{k}": v for k, v in to_authors_naming(model.state_dict()).items()}
    assert from_authors_state_dict(theirs, model.config).keys() == model.state_dict().keys()


def test_unknown_key_is_named():
    model = JAFFNet(**SMALL)
    theirs = to_authors_naming(model.state_dict())
    theirs["jaff5.alpha"] = torch.zeros(1)
    theirs["encoder1.0.conv3.weight"] = torch.zeros(1)
    with pytest.raises(AuthorsWeightsError, match=r"unknown keys: encoder1\.0\.conv3\.weight, jaff5\.alpha") as info:
        from_authors_state_dict(theirs, model.config)
    assert isinstance(info.value, (WeightsError, ValueError))
    assert info.value.unknown == ["encoder1.0.conv3.weight", "jaff5.alpha"] and not info.value.missing


def test_missing_key_is_named_in_the_authors_naming():
    model = JAFFNet(**SMALL)
    theirs = to_authors_naming(model.state_dict())
    del theirs["bridge.mrf2.conv1.4.num_batches_tracked"]
    del theirs["jaff3.pro.0.weight"]
    with pytest.raises(AuthorsWeightsError,
                       match=r"missing keys: bridge\.mrf2\.conv1\.4\.num_batches_tracked, jaff3\.pro\.0\.weight"):
        from_authors_state_dict(theirs, model.config)


def test_shape_mismatch_is_named():
    model = JAFFNet(**SMALL)
    theirs = to_authors_naming(model.state_dict())
    theirs["jaff2.pro.0.weight"] = torch.zeros(3, 1, 3, 3)
    with pytest.raises(AuthorsWeightsError, match=r"shape mismatches: jaff2\.pro\.0\.weight: file \(3, 1, 3, 3\) "
                                                  r"vs model \(64, 1, 3, 3\)$"):
        from_authors_state_dict(theirs, model.config)


def test_other_dilation_rates_are_refused():
    # Invisible in keys and shapes: the authors' branches are fixed at rates 1, 2, 4.
    model = JAFFNet(width=0.125, dilation_rates=(1, 3, 5))
    with pytest.raises(AuthorsWeightsError, match="dilation rates"):
        from_authors_state_dict(to_authors_naming(model.state_dict()), model.config)
