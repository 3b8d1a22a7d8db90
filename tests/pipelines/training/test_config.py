import pytest

from pipelines.training.config import TrainConfig, dump_config, load_config, parse_override, read_yaml


def test_defaults_are_the_faithful_full_size_model():
    cfg = load_config()
    assert (cfg.encoder_depth, cfg.width, cfg.image_size, cfg.dilation_rates) == (18, 1.0, 256, [1, 2, 4])
    assert cfg.best_metric == "val_weighted_f" and cfg.best_mode == "max"


def test_file_then_overrides(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text("width: 0.25\nepochs: 3\n")
    cfg = load_config(path, ["epochs=5", "dilation_rates=[1, 3, 5]", "mixed_precision=false", "best_metric=val_mae"])
    assert (cfg.width, cfg.epochs, cfg.dilation_rates, cfg.mixed_precision) == (0.25, 5, [1, 3, 5], False)
    assert cfg.best_mode == "min"
    assert isinstance(load_config(None, ["lr=1"]).lr, float)  # ints are accepted for floats


def test_dump_round_trips(tmp_path):
    cfg = load_config(None, ["width=0.5", "augment.crop_p=0.25", "augment.crop_scale=[0.5, 0.9]"])
    path = tmp_path / "merged.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_replaced_changes_only_the_given_keys_and_validates_them():
    cfg = load_config(None, ["width=0.5", "augment.crop_p=0.25"])
    changed = cfg.replaced(epochs=3, dilation_rates=(1, 3, 5))
    assert (changed.epochs, changed.dilation_rates) == (3, [1, 3, 5])
    assert changed.replaced(epochs=cfg.epochs, dilation_rates=cfg.dilation_rates) == cfg and cfg.epochs != 3
    with pytest.raises(ValueError, match="val_batch_size"):
        cfg.replaced(val_batch_size=0)


@pytest.mark.parametrize("override, key", [
    ("width=-1", "width"),
    ("width=abc", "width"),
    ("image_size=100", "image_size"),
    ("batch_size=1", "batch_size"),
    ("epochs=true", "epochs"),
    ("dilation_rates=[1, 0]", "dilation_rates"),
    ("dilation_rates=3", "dilation_rates"),
    ("optimizer=lamb", "optimizer"),
    ("best_metric=accuracy", "best_metric"),
    ("model_name=my model", "model_name"),
    ("augment.hflip_p=1.5", "augment.hflip_p"),
    ("augment.crop_scale=[0.9, 0.5]", "augment.crop_scale"),
    ("augment.rot90=3", "augment.rot90"),
    ("encoder_depth=50", "encoder_depth"),
    ("lr=null", "lr"),
    ("ray_log_level=verbose", "ray_log_level"),
    ("normalization=bgr", "normalization"),
])
def test_bad_values_name_their_key(override, key):
    with pytest.raises(ValueError, match=f"'{key}'"):
        load_config(None, [override])


def test_unknown_keys_and_malformed_overrides():
    with pytest.raises(ValueError, match="unknown config key 'widht'.*did you mean 'width'"):
        parse_override("widht=1")
    with pytest.raises(ValueError, match="key=value"):
        parse_override("width")


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        read_yaml(tmp_path / "list.yaml")
    (tmp_path / "typo.yaml").write_text("epoch: 3\n")
    with pytest.raises(ValueError, match="unknown config key 'epoch'"):
        load_config(tmp_path / "typo.yaml")


def test_repo_config_is_the_packaged_one():
    from pathlib import Path

    repo_config = Path(__file__).resolve().parents[3] / "configs" / "train.yaml"
    assert read_yaml(repo_config) == read_yaml(None)


def test_patience_counts_epochs_since_the_best():
    from pipelines.training.loop import epochs_without_improvement

    history = [{"val_mae": v} for v in (0.5, 0.3, 0.4, 0.35)]
    assert epochs_without_improvement(history, "val_mae", "min") == 2
    assert epochs_without_improvement(history, "val_mae", "max") == 3
    assert epochs_without_improvement(history[:2], "val_mae", "min") == 0
    with pytest.raises(ValueError, match="patience"):
        load_config(None, ["patience=0"])
    assert load_config(None, ["patience=3"]).patience == 3 and load_config(None, []).patience is None


def test_ema_decay_is_off_by_default_and_checked():
    assert load_config(None, []).ema_decay is None
    assert load_config(None, ["ema_decay=0.99"]).ema_decay == 0.99
    for bad in ("ema_decay=1", "ema_decay=0", "ema_decay=-0.5"):
        with pytest.raises(ValueError, match="ema_decay"):
            load_config(None, [bad])


def test_unknown_keys_name_the_valid_keys():
    with pytest.raises(ValueError) as info:
        TrainConfig(widht=0.5, epochs=3)
    message = str(info.value)
    assert "unknown config key 'widht' (did you mean 'width'?)" in message
    assert "valid keys: " + ", ".join(TrainConfig.model_fields) in message


def test_model_and_input_keys_get_the_models_own_checks():
    from jaffnet.architecture import check_width
    from jaffnet.contract import INPUT_MULTIPLE, check_image_size

    bad_size = INPUT_MULTIPLE + INPUT_MULTIPLE // 2
    with pytest.raises(ValueError) as contract:
        check_image_size(bad_size)
    with pytest.raises(ValueError, match="'image_size'") as config:
        load_config(None, [f"image_size={bad_size}"])
    assert str(contract.value).removeprefix("image_size ") in str(config.value)
    assert f"multiple of {INPUT_MULTIPLE}" in str(config.value)
    assert load_config(None, [f"image_size={2 * INPUT_MULTIPLE}"]).image_size == 2 * INPUT_MULTIPLE
    with pytest.raises(ValueError) as model:
        check_width(5)
    with pytest.raises(ValueError, match="'width'") as config:
        load_config(None, ["width=5"])
    assert str(model.value).removeprefix("width ").removesuffix("5") in str(config.value)


def test_every_bad_key_is_reported_and_the_config_is_frozen_and_picklable():
    import pickle

    with pytest.raises(ValueError) as info:
        TrainConfig.from_dict({"lr": 0, "optimizer": "lamb", "epoch": 3})
    message = str(info.value)
    assert "'lr' must be > 0" in message and "'optimizer' must be adam, adamw or sgd" in message
    assert "unknown config key 'epoch'" in message
    cfg = load_config(None, ["dilation_rates=[1, 3, 5]"])
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    with pytest.raises(ValueError):
        cfg.width = 0.5
    assert TrainConfig(dilation_rates=(1, 2)).dilation_rates == [1, 2]  # tuples, as the search space holds them


def test_normalization_is_imagenet_by_default_and_travels_in_the_contract():
    assert load_config().normalization == "imagenet" == load_config().input_contract().normalization
    assert load_config(None, ["normalization=authors"]).input_contract().normalization == "authors"
    with pytest.raises(ValueError, match=r"config key 'normalization' must be one of \('imagenet', 'authors'\)"):
        load_config(None, ["normalization=bgr"])


def test_numbers_in_exponent_notation_are_numbers(tmp_path):
    # YAML 1.1 (PyYAML) reads 1e-4 as a string; anyone typing --set lr=1e-4 means the number
    assert load_config(None, ["lr=1e-4"]).lr == 1e-4 and load_config(None, ["lr=2E-3"]).lr == 0.002
    assert load_config(None, ["lr=1.5e-3"]).lr == 0.0015 and load_config(None, ["weight_decay=5e-5"]).weight_decay == 5e-5
    path = tmp_path / "c.yaml"
    path.write_text("lr: 3e-4\nepochs: 2\n")
    assert load_config(path).lr == 3e-4 and load_config(path).epochs == 2
    with pytest.raises(ValueError, match="config key 'lr' must be a number, got '1e-4x'"):
        load_config(None, ["lr=1e-4x"])


def test_mirrored_views_are_off_by_default_and_travel_in_the_contract():
    assert load_config().flip_views == 1 == load_config().input_contract().flip_views
    assert load_config(None, ["flip_views=4"]).input_contract().flip_views == 4
    with pytest.raises(ValueError, match=r"config key 'flip_views' must be one of \(1, 2, 4, 8\), got 3"):
        load_config(None, ["flip_views=3"])


def test_config_files_merge_in_turn_and_the_hard_demo_keys_apply_over_the_demo():
    from pipelines.training.config import DEMO_CONFIG, HARD_DEMO_CONFIG

    demo = load_config(DEMO_CONFIG)
    hard = load_config([DEMO_CONFIG, HARD_DEMO_CONFIG])
    assert hard.experiment == "jaffnet-demo-hard" != demo.experiment
    assert hard.width == demo.width == 0.125  # demo.yaml's keys stay unless the hard file sets them
    # A section merges key by key: each file sets the scale-crop, train.yaml's other augment keys stay.
    assert (demo.augment.crop_p, hard.augment.crop_p) == (0.0, 0.7)
    assert demo.augment.model_copy(update={"crop_p": 0.7}) == hard.augment == load_config().augment


def test_augmentation_is_a_section_of_the_training_config(tmp_path):
    """One config mechanism: the packaged defaults hold the augmentation, a file or --set changes one
    key and keeps the others, and every key is a flat MLflow param."""
    from pipelines.data.augment import AugmentConfig

    assert load_config().augment == AugmentConfig()  # train.yaml's section and the code's defaults agree
    path = tmp_path / "mine.yaml"
    path.write_text("augment:\n  blur_p: 0.0\n")
    cfg = load_config(path, ["augment.crop_p=0.25"])
    assert (cfg.augment.crop_p, cfg.augment.blur_p, cfg.augment.hflip_p) == (0.25, 0.0, 0.5)
    params = cfg.params()
    assert params["augment.crop_p"] == "0.25" and params["augment.crop_scale"] == "[0.6, 1.0]"
    assert "augment" not in params and params["width"] == "1.0"
    with pytest.raises(ValueError, match="unknown config key 'augment.wobble'.*did you mean"):
        parse_override("augment.wobble=1")
    with pytest.raises(ValueError, match="unknown config key 'augment'"):
        parse_override("augment=1")  # a section is set key by key


def test_test_hooks_are_not_config_keys(monkeypatch):
    """The injected worker failure is a test hook (an environment variable the driver reads), not a
    key of the user's config; configs stored by older versions with the retired key still load."""
    from pipelines.training.loop import FAIL_ONCE_ENV, fail_once_epoch

    assert "debug_fail_once_at_epoch" not in read_yaml(None)
    with pytest.raises(ValueError, match="unknown config key 'debug_fail_once_at_epoch'"):
        load_config(None, ["debug_fail_once_at_epoch=1"])
    assert TrainConfig.from_dict({"width": 0.5, "debug_fail_once_at_epoch": None}).width == 0.5
    monkeypatch.delenv(FAIL_ONCE_ENV, raising=False)
    assert fail_once_epoch(3) is None
    monkeypatch.setenv(FAIL_ONCE_ENV, "2")
    assert fail_once_epoch(3) == 2
    for bad in ("3", "-1", "soon"):
        monkeypatch.setenv(FAIL_ONCE_ENV, bad)
        with pytest.raises(ValueError, match=FAIL_ONCE_ENV):
            fail_once_epoch(3)


def test_the_injected_failure_waits_until_the_previous_epoch_is_registered(tmp_path):
    """The hook raises only once Ray Train's controller has registered the last epoch's checkpoint:
    raised at once, the error could reach the controller first, and the restart begin from scratch."""
    import json
    import threading
    import time

    from pipelines.training.loop import InjectedFailure, _maybe_inject_failure

    def register_epoch_0() -> None:
        time.sleep(0.4)
        (tmp_path / "checkpoint_manager_snapshot.json").write_text(
            json.dumps({"checkpoint_results": [{"checkpoint_dir_name": "c0", "metrics": {"epoch": 0}}]}))

    _maybe_inject_failure(1, 1, rank=0, world=2, run_dir=str(tmp_path))  # only the last rank fails
    threading.Thread(target=register_epoch_0).start()
    started = time.monotonic()
    with pytest.raises(InjectedFailure, match="epoch 1"):
        _maybe_inject_failure(1, 1, rank=1, world=2, run_dir=str(tmp_path))
    assert time.monotonic() - started >= 0.4
    _maybe_inject_failure(1, 1, rank=1, world=2, run_dir=str(tmp_path))  # once: the restarted group carries on
