import pytest

from tuning.search_space import (DEFAULT_SEARCH_SPACE, SearchSpaceError, load_search_space, parse_search_space,
                                 resolve_training)


def write(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_default_space_searches_loss_weights_dilations_and_lr():
    space = load_search_space()
    assert space.source == DEFAULT_SEARCH_SPACE
    assert set(space.parameters) == {"w_bce", "w_ssim", "w_iou", "dilation_rates", "lr"}
    assert space.parameters["w_bce"].distribution == "loguniform"
    assert space.parameters["dilation_rates"].values == ((1, 2, 4), (1, 3, 5), (2, 4, 8), (1, 2, 4, 8))
    base = resolve_training(space, overrides=["epochs=3"])
    assert base.epochs == 3

    from ray.tune.search.sample import Categorical, Float

    param_space = space.param_space()
    assert isinstance(param_space["w_iou"], Float) and isinstance(param_space["dilation_rates"], Categorical)
    assert param_space["dilation_rates"].categories[0] == [1, 2, 4]  # lists, as TrainConfig takes them


def test_trial_count_multiplies_grids_and_repeats():
    space = parse_search_space({"num_samples": 2, "parameters": {"lr": {"grid": [0.1, 0.01, 0.001]},
                                                                  "dilation_rates": {"grid": [[1, 2], [1, 3]]},
                                                                  "w_bce": {"uniform": [0.5, 1.0]}}})
    assert space.trial_count() == 12
    assert load_search_space().trial_count() == 8
    assert load_search_space(repeats=3).trial_count() == 24


def test_configurations_are_drawn_reproducibly_in_grid_order():
    space = parse_search_space({"num_samples": 2, "seed": 7, "parameters": {
        "lr": {"grid": [0.1, 0.01]}, "w_bce": {"loguniform": [0.5, 2.0]},
        "dilation_rates": {"choice": [[1, 2, 4], [1, 3, 5]]}}})
    drawn = space.configurations()
    assert drawn == space.configurations() and len(drawn) == space.configuration_count() == 4
    assert [c["lr"] for c in drawn] == [0.1, 0.01, 0.1, 0.01]  # every grid value, per draw, in order
    assert all(0.5 <= c["w_bce"] <= 2.0 and c["dilation_rates"] in ([1, 2, 4], [1, 3, 5]) for c in drawn)
    assert len({c["w_bce"] for c in drawn}) == 4  # drawn afresh for each grid value
    assert parse_search_space({**space.to_dict(), "seed": 8}).configurations() != drawn
    resolve_training(space)  # and every drawn value is a valid training value
    from pipelines.training.config import TrainConfig

    for configuration in drawn:
        TrainConfig.from_dict(configuration)


def test_each_configuration_runs_once_per_seed():
    """Tune's trials: the grid of configuration x seed, each trial with its configuration's
    values (the same values for every seed) and seed; picklable for --resume."""
    import cloudpickle
    from ray.tune.search.variant_generator import generate_variants

    from tuning.search_space import trial_param_space, trial_seeds

    space = load_search_space(num_samples=2, repeats=3)
    drawn = space.configurations()
    seeds = trial_seeds(10, space.repeats)
    assert seeds == [10, 11, 12]
    param_space = cloudpickle.loads(cloudpickle.dumps(trial_param_space(drawn, seeds)))
    trials = [spec["config"] for _, spec in generate_variants({"config": param_space})]
    assert len(trials) == space.trial_count() == 6
    assert [(t["configuration"], t["seed"]) for t in trials] == [(0, 10), (1, 10), (0, 11), (1, 11), (0, 12), (1, 12)]
    for trial in trials:
        assert {k: v for k, v in trial.items() if k not in ("configuration", "seed")} == drawn[trial["configuration"]]
    # Inside Tune the function gets the trial's config itself.
    assert param_space["lr"].func({"configuration": 1, "seed": 10}) == drawn[1]["lr"]


def test_trial_config_drops_the_configuration_index_and_takes_the_seed(tmp_path):
    from pipelines.training.config import TrainConfig
    from tuning.trainable import trial_train_config

    cfg = trial_train_config(TrainConfig(seed=0).to_dict(), {"configuration": 3, "seed": 2, "lr": 0.01}, tmp_path)
    assert (cfg.seed, cfg.lr) == (2, 0.01)


@pytest.mark.parametrize("epochs, grace", [(1, 1), (3, 1), (4, 1), (8, 2), (10, 2), (50, 12)])
def test_asha_grace_defaults_to_a_quarter_of_the_epochs(epochs, grace):
    space = load_search_space()
    assert space.grace_period is None
    assert space.asha_grace_period(epochs) == grace


def test_an_explicit_asha_grace_is_kept(tmp_path):
    space = load_search_space(write(tmp_path, "scheduler: {grace_period: 3}\nparameters: {w_bce: {choice: [1.0]}}\n"))
    assert [space.asha_grace_period(epochs) for epochs in (2, 3, 50)] == [2, 3, 3]
    assert space.describe_grace(50) == "grace 3 epoch(s) (set in the search file)"


def test_command_line_overrides_and_round_trip():
    space = load_search_space(num_samples=3, max_concurrent=2)
    assert (space.num_samples, space.max_concurrent) == (3, 2)
    again = parse_search_space(space.to_dict(), space.source)
    assert again == space


@pytest.mark.parametrize("sets, reason", [
    ("[[1, 2, 4], [0, 2]]", "positive ints"),
    ("[[1, 2, 4], []]", "non-empty"),
    ("[[1, 1, 2]]", "rates repeat"),
    ("[[1, 2.5]]", "positive ints"),
    ("['124']", "non-empty sequence"),
    ("[[1, 2, 4], [1, 2, 4]]", "listed twice"),
])
def test_invalid_dilation_set_fails_at_once(tmp_path, sets, reason):
    path = write(tmp_path, f"parameters:\n  dilation_rates: {{choice: {sets}}}\n")
    with pytest.raises(SearchSpaceError, match="parameters.dilation_rates") as info:
        load_search_space(path)
    assert reason in str(info.value) and str(path) in str(info.value)


def test_dilation_rates_are_not_a_continuous_range(tmp_path):
    with pytest.raises(SearchSpaceError, match="choice"):
        load_search_space(write(tmp_path, "parameters:\n  dilation_rates: {uniform: [1, 8]}\n"))


@pytest.mark.parametrize("spec, message", [
    ("w_bce: {loguniform: [0, 1.0]}", "0 < low < high"),
    ("w_bce: {uniform: [2.0, 1.0]}", "low < high"),
    ("lr: {loguniform: [1e-4, fast]}", r"loguniform needs \[low, high\] numbers, got \[0.0001, 'fast'\]"),
    ("w_bce: {normal: [0, 1]}", "expected one of"),
    ("w_bce: 0.5", "expected one of"),
    ("w_bce: {choice: []}", "non-empty list"),
])
def test_bad_distribution_specs(tmp_path, spec, message):
    with pytest.raises(SearchSpaceError, match=message):
        load_search_space(write(tmp_path, f"parameters:\n  {spec}\n"))


@pytest.mark.parametrize("text, message", [
    ("parameters: {}\n", "at least one"),
    ("parameters: {w_bce: {choice: [1.0]}}\nnum_samples: 0\n", "num_samples must be >= 1"),
    ("parameters: {w_bce: {choice: [1.0]}}\nrepeats: 0\n", "repeats must be >= 1"),
    ("parameters: {w_bce: {choice: [1.0]}}\nscheduler: {grace_period: 0}\n", "grace_period must be >= 1"),
    ("parameters: {w_bce: {choice: [1.0]}}\nscheduler: {grace: 1}\n", "scheduler must be a mapping"),
    ("parameters: {w_bce: {choice: [1.0]}}\nscheduler: {reduction_factor: 1}\n", "reduction_factor must be >= 2"),
    ("parameters: {w_bce: {choice: [1.0]}}\nsamples: 3\n", "unknown key 'samples'"),
    ("- just a list\n", "must hold a mapping"),
])
def test_bad_search_settings(tmp_path, text, message):
    with pytest.raises(SearchSpaceError, match=message):
        load_search_space(write(tmp_path, text))


@pytest.mark.parametrize("spec, message", [
    ("w_bec: {choice: [1.0]}", "not a training-config key \\(did you mean 'w_bce'\\?\\)"),
    ("epochs: {choice: [2, 4]}", "fixed for a whole search"),
    # The decision rule is one for the whole search: a free target lets a trial win by rejecting everything.
    ("calibration_target: {uniform: [0.01, 0.5]}", "'calibration_target' is part of the decision rule"),
    ("calibrate_for: {choice: [max_escape_rate, max_overkill_rate]}", "'calibrate_for' is part of the decision rule"),
    ("min_defect_area_px: {grid: [0, 16]}", "'min_defect_area_px' is part of the decision rule"),
    ("seed: {grid: [0, 1, 2]}", "--repeats N"),
    ("batch_size: {loguniform: [2.0, 8.0]}", "use choice or grid"),
    ("w_ssim: {choice: [1.0, -1.0]}", "value -1.0 is rejected by the training config"),
    ("optimizer: {choice: [adam, lion]}", "must be adam, adamw or sgd"),
])
def test_values_are_checked_against_the_training_config(tmp_path, spec, message):
    space = load_search_space(write(tmp_path, f"parameters:\n  {spec}\n"))
    with pytest.raises(SearchSpaceError, match=message):
        resolve_training(space)


def test_training_block_and_set_overrides_apply_in_order(tmp_path):
    space = load_search_space(write(tmp_path, "parameters: {w_bce: {choice: [1.0]}}\n"
                                              "training: {width: 0.25, epochs: 5}\n"))
    base = resolve_training(space, overrides=["epochs=2"])
    assert (base.width, base.epochs) == (0.25, 2)
    with pytest.raises(SearchSpaceError, match="unknown config key 'widht'"):
        resolve_training(space, overrides=["widht=1"])


def test_cli_rejects_a_bad_space_before_any_ray_work(tmp_path, monkeypatch, capsys):
    import tuning.search
    from cli.main import main

    def must_not_run(*args, **kwargs):
        raise AssertionError("the search was planned despite an invalid search space")

    monkeypatch.setattr(tuning.search, "plan_search", must_not_run)
    path = write(tmp_path, "parameters:\n  dilation_rates: {choice: [[1, 2, 4], [2, -4]]}\n")
    assert main(["tune", "--data", str(tmp_path), "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "invalid dilation set [2, -4]" in err and "Traceback" not in err


def test_cli_resume_takes_no_other_option(capsys):
    from cli.main import main

    assert main(["tune", "--resume", "somewhere", "--num-samples", "3", "--repeats", "2"]) == 2
    assert "drop --num-samples, --repeats" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_cli_repeats_must_be_at_least_one(value, capsys):
    from cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["tune", "--print-space", "--repeats", value])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert "argument --repeats:" in error and ("must be >= 1" in error or "is not an integer" in error)


def test_print_space(capsys):
    from cli.main import main

    assert main(["tune", "--print-space", "--set", "epochs=8"]) == 0
    out = capsys.readouterr().out
    assert "dilation_rates: choice of (1, 2, 4), (1, 3, 5), (2, 4, 8), (1, 2, 4, 8)" in out
    assert "8 configurations x 1 seed(s) (0) = 8 trials" in out
    assert "ASHA grace 2 epoch(s) (default: a quarter of 8), reduction factor 2, max 8 epochs" in out
    assert "max 8 epochs, on val_weighted_f (max)" in out


def test_print_space_states_the_escape_target_and_the_seeds(capsys):
    from cli.main import main

    assert main(["tune", "--print-space", "--repeats", "3", "--set", "seed=5",
                 "--set", "best_metric=val_overkill_at_escape", "--set", "calibration_target=0.02"]) == 0
    out = capsys.readouterr().out
    assert "8 configurations x 3 seed(s) (5, 6, 7) = 24 trials" in out
    assert "on val_overkill_at_escape (min) at val escape rate <= 2.00%" in out
    # Calibrated for overkill, the metric keeps the default escape target; AUROC needs none.
    assert main(["tune", "--print-space", "--set", "best_metric=val_overkill_at_escape",
                 "--set", "calibrate_for=max_overkill_rate", "--set", "calibration_target=0.1"]) == 0
    assert "val_overkill_at_escape (min) at val escape rate <= 5.00%" in capsys.readouterr().out
    assert main(["tune", "--print-space", "--set", "best_metric=val_image_auroc"]) == 0
    assert "on val_image_auroc (max)\n" in capsys.readouterr().out + "\n"


def test_resume_without_a_folder_picks_the_newest_search(tmp_path, monkeypatch, capsys):
    import os

    from cli.main import main
    from tuning.search import SEARCH_PLAN_FILE, SearchError, latest_search

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SearchError, match="no search to resume"):
        latest_search()
    for age, name in ((100, "older"), (0, "newer")):
        plan = tmp_path / "ray_results" / name / SEARCH_PLAN_FILE
        plan.parent.mkdir(parents=True)
        plan.write_text("{}")
        os.utime(plan, (plan.stat().st_atime, plan.stat().st_mtime - age))
    assert latest_search() == tmp_path / "ray_results" / "newer"
    # The plan is read before Ray starts: an unreadable one is a clear error.
    assert main(["tune", "--resume"]) == 2
    assert "jaffnet_search.json is unreadable" in capsys.readouterr().err


def test_a_range_over_an_optional_float_key(tmp_path):
    space = load_search_space(write(tmp_path, "parameters:\n  ema_decay: {uniform: [0.9, 0.99]}\n"))
    assert resolve_training(space).ema_decay is None  # sampled per trial; the base keeps its default
    space = load_search_space(write(tmp_path, "parameters:\n  patience: {uniform: [1.0, 3.0]}\n"))
    with pytest.raises(SearchSpaceError, match="'patience' takes int values; use choice or grid"):
        resolve_training(space)
