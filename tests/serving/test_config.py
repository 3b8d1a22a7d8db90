import pytest
from pydantic import ValidationError

import inspect

from serving.app import build_app, resolve_model_uri
from serving.config import (
    DEFAULT_CONFIG_PATH,
    ServingConfig,
    application_section,
    deployment_options,
    read_serve_config,
)
from serving.model_deployment import ModelLoadError


def test_packaged_serve_config_is_valid_for_serve_and_for_us():
    from ray.serve.schema import ServeDeploySchema

    config = read_serve_config(DEFAULT_CONFIG_PATH)
    ServeDeploySchema.model_validate(config)  # what `serve run` / `serve deploy` check
    application = application_section(config)
    assert application["import_path"] == "serving.app:build_app"
    assert len(inspect.signature(build_app).parameters) == 1  # Serve calls builders with the args dict only
    settings = ServingConfig(**application["args"])
    options = deployment_options(application)
    assert set(options) == {"ModelDeployment", "InspectionAPI"}
    # Batches can only fill when the replica accepts that many requests at once.
    assert options["ModelDeployment"]["max_ongoing_requests"] >= settings.max_batch_size


@pytest.mark.parametrize("bad", [{"threshold": 1.5}, {"image_size": 100}, {"max_batch_size": 0},
                                 {"stitch": "median"}, {"max_batch": 8}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValidationError):
        ServingConfig(**bad)


def test_missing_alias_fails_at_build_with_the_uri_and_registry(tracking):
    with pytest.raises(ModelLoadError, match=r"models:/nope@champion.*mlflow\.db"):
        build_app({"model_uri": "models:/nope@champion", "tracking_uri": tracking})


def test_missing_local_model_directory_fails_at_build(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model_uri(str(tmp_path / "absent"))
