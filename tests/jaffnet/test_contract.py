import pytest

from jaffnet.contract import InputContract, contract_from_metadata, contract_tags


def test_round_trip_and_tags():
    contract = InputContract(image_size=96, mode="tile", tile_overlap=0.5, stitch="max")
    assert InputContract.from_dict(contract.to_dict()) == contract
    assert contract.tile_overlap_px == 48
    assert contract_tags(contract)["input_mode"] == "tile" and contract_tags(contract)["input_image_size"] == "96"
    assert contract.normalization == "imagenet"


def test_the_authors_normalisation_round_trips():
    contract = InputContract(image_size=64, normalization="authors")
    assert contract.to_dict()["normalization"] == "authors"
    assert InputContract.from_dict(contract.to_dict()) == contract
    assert contract_from_metadata({"input_contract": contract.to_dict()}) == contract
    assert contract_tags(contract)["input_normalization"] == "authors"


@pytest.mark.parametrize("values,error", [
    ({"image_size": 50}, "multiple of 32"),
    ({"image_size": 64, "mode": "stretch"}, "input mode"),
    ({"image_size": 64, "channels": 1}, "3-channel"),
    ({"image_size": 64, "tile_overlap": 1.0}, r"\[0, 1\)"),
    ({"image_size": 64, "stitch": "median"}, "stitch"),
    ({"image_size": 64, "normalization": "bgr"}, r"normalization must be one of \('imagenet', 'authors'\), got 'bgr'"),
    ({"image_size": 64, "colour": "rgb"}, "unknown input contract keys"),
    ({"image_size": 64, "flip_views": 3}, r"flip_views must be one of \(1, 2, 4, 8\), got 3"),
    ({"image_size": 64, "flip_views": True}, "flip_views must be one of"),
])
def test_bad_contracts_are_refused(values, error):
    with pytest.raises(ValueError, match=error):
        InputContract.from_dict(values)


def test_mirrored_views_round_trip_and_default_to_none_for_older_models():
    contract = InputContract(image_size=64, flip_views=4)
    assert InputContract.from_dict(contract.to_dict()) == contract
    assert contract_tags(contract)["input_flip_views"] == "4"
    assert "mean of 4 mirrored views" in contract.describe()
    saved_before_views = {"image_size": 64, "mode": "resize", "channels": 3, "normalization": "imagenet",
                          "tile_overlap": 0.25, "stitch": "mean"}
    assert contract_from_metadata({"input_contract": saved_before_views}).flip_views == 1


def test_models_saved_before_contracts_are_resize_models():
    legacy = contract_from_metadata({"image_size": 64, "threshold": 0.4})
    assert legacy == InputContract(image_size=64, mode="resize")


def test_a_model_without_any_input_size_is_refused_clearly():
    with pytest.raises(ValueError, match="no usable input contract"):
        contract_from_metadata({"threshold": 0.4}, "models:/x/1")
