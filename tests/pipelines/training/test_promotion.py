import pytest

from jaffnet import JAFFNet
from pipelines import registry
from pipelines.registry import (
    AT_ESCAPE_TAG,
    AT_ESCAPE_TARGET_TAG,
    ESCAPE_TAG,
    MANIFEST_TAG,
    compare_with_champion,
)


def test_compare_with_champion_rules():
    new = {MANIFEST_TAG: "abc", "val_weighted_f": "0.60", "val_mae": "0.02"}
    assert compare_with_champion(new, None, "val_weighted_f", False).promote
    assert compare_with_champion(new, {MANIFEST_TAG: "abc", "val_weighted_f": "0.5"}, "val_weighted_f", False).promote
    worse = compare_with_champion(new, {MANIFEST_TAG: "abc", "val_weighted_f": "0.7"}, "val_weighted_f", False)
    assert not worse.promote and "does not beat" in worse.reason
    assert compare_with_champion(new, {MANIFEST_TAG: "abc", "val_mae": "0.03"}, "val_mae", True).promote
    assert not compare_with_champion(new, {MANIFEST_TAG: "abc", "val_mae": "0.01"}, "val_mae", True).promote
    other_data = compare_with_champion(new, {MANIFEST_TAG: "xyz", "val_weighted_f": "0.1"}, "val_weighted_f", False)
    assert not other_data.promote and "other data" in other_data.reason
    assert compare_with_champion(new, {MANIFEST_TAG: "xyz", "val_weighted_f": "0.9"}, "val_weighted_f", False,
                                 force=True).promote


def test_a_version_that_lets_more_defects_pass_never_becomes_champion_unforced():
    champion = {MANIFEST_TAG: "abc", "val_weighted_f": "0.5", ESCAPE_TAG: "0.05"}
    better_but_escapes = {MANIFEST_TAG: "abc", "val_weighted_f": "0.9", ESCAPE_TAG: "0.10"}
    decision = compare_with_champion(better_but_escapes, champion, "val_weighted_f", False)
    assert not decision.promote and "escape rate 0.1000 is worse" in decision.reason
    assert compare_with_champion(better_but_escapes, champion, "val_weighted_f", False, force=True).promote
    as_safe = {**better_but_escapes, ESCAPE_TAG: "0.05"}
    assert compare_with_champion(as_safe, champion, "val_weighted_f", False).promote
    legacy_champion = {MANIFEST_TAG: "abc", "val_weighted_f": "0.5"}  # registered before escape rates
    assert compare_with_champion(better_but_escapes, legacy_champion, "val_weighted_f", False).promote


def test_versions_are_compared_at_the_same_escape_target_not_each_at_its_own_threshold():
    champion = {MANIFEST_TAG: "abc", "val_weighted_f": "0.5", ESCAPE_TAG: "0.01", AT_ESCAPE_TARGET_TAG: "0.05",
                AT_ESCAPE_TAG: "0.10"}
    # its own threshold lets more defects pass, but at escape <= 5 % it rejects fewer good parts: promoted
    candidate = {**champion, "val_weighted_f": "0.6", ESCAPE_TAG: "0.20", AT_ESCAPE_TAG: "0.05"}
    assert compare_with_champion(candidate, champion, "val_weighted_f", False).promote
    more_overkill = {**candidate, AT_ESCAPE_TAG: "0.30"}
    decision = compare_with_champion(more_overkill, champion, "val_weighted_f", False)
    assert not decision.promote and "at val escape <= 5.00% its overkill 0.3000 is worse" in decision.reason
    other_target = {**candidate, AT_ESCAPE_TARGET_TAG: "0.01"}  # not comparable: back to the escape-rate check
    assert "escape rate 0.2000 is worse" in compare_with_champion(other_target, champion, "val_weighted_f",
                                                                  False).reason


@pytest.fixture()
def tracking(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    registry.configure_tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("promotion-test")
    yield
    mlflow.set_tracking_uri(None)


def _register(score: float, manifest: str = "abc") -> str:
    import mlflow

    with mlflow.start_run():
        info = registry.log_model(JAFFNet(width=0.125), {"threshold": 0.5, "image_size": 32})
    tags = {MANIFEST_TAG: manifest, "val_weighted_f": score}
    return str(registry.register(info.model_uri, "promo", tags=tags).version)


def test_champion_moves_only_to_a_better_version(tracking):
    from mlflow import MlflowClient

    def champion() -> str:
        return str(MlflowClient().get_model_version_by_alias("promo", "champion").version)

    first = _register(0.5)
    assert registry.promote_if_better("promo", first, "val_weighted_f", lower_is_better=False).promote
    worse = _register(0.4)
    assert not registry.promote_if_better("promo", worse, "val_weighted_f", lower_is_better=False).promote
    assert champion() == first
    assert str(MlflowClient().get_model_version_by_alias("promo", "candidate").version) == worse
    better = _register(0.6)
    assert registry.promote_if_better("promo", better, "val_weighted_f", lower_is_better=False).promote
    assert champion() == better
    forced = _register(0.1, manifest="other")
    assert registry.promote_if_better("promo", forced, "val_weighted_f", lower_is_better=False, force=True).promote
    assert champion() == forced
