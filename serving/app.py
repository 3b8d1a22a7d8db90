"""The Serve application: ``serving.app:build_app`` (the ``import_path`` in serve_config.yaml).

The builder resolves a registry alias to a concrete version once, so every replica
(and every autoscaled replica started later) serves the same version even if the alias
moves; redeploy to pick up a new champion. A missing model or alias fails here, at
deploy time, with a message naming the URI and the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.serve import Application

from pipelines.registry import configure_tracking, is_local_path, resolve_model_version
from serving.access import AccessSettings
from serving.api import InspectionAPI
from serving.config import ServingConfig
from serving.decision_log import DecisionLogSettings
from serving.keys import read_keys_file
from serving.model_deployment import ModelDeployment, ModelLoadError


def resolve_model_uri(model_uri: str) -> str:
    """``models:/NAME@ALIAS`` -> ``models:/NAME/VERSION``; other URIs are checked and kept.

    Needs the tracking/registry URI configured (``configure_tracking``).
    """
    if is_local_path(model_uri):
        path = Path(model_uri).expanduser()
        if not path.exists():
            raise ModelLoadError(f"model directory {model_uri!r} does not exist")
        return str(path.resolve())  # replicas need not share the driver's working directory
    if not model_uri.startswith("models:/"):
        return model_uri

    try:
        version = resolve_model_version(model_uri)
    except LookupError as exc:
        raise ModelLoadError(
            f"{exc}. Register a model and set the alias first (e.g. with `jaffnet train`), or pass --model"
        ) from exc
    return f"models:/{version.name}/{version.version}"


def resolve_log_folder(settings: DecisionLogSettings) -> DecisionLogSettings:
    """A relative decision log folder is the driver's (replicas need not share its working directory)."""
    if settings.folder is None:
        return settings
    return settings.model_copy(update={"folder": str(Path(settings.folder).expanduser().resolve())})


def resolve_keys_file(settings: AccessSettings) -> AccessSettings:
    """The keys file as an absolute path, read once here so a missing or malformed file fails the
    deployment (``KeysFileError`` names the line) instead of every request."""
    if settings.keys_file is None:
        return settings
    path = Path(settings.keys_file).expanduser().resolve()
    read_keys_file(path)
    return settings.model_copy(update={"keys_file": str(path)})


def build_app(args: dict[str, Any]) -> Application:
    """The application builder ``serve run`` / ``serve deploy`` call: ``args`` are ``ServingConfig`` fields.

    Serve applies the YAML's ``deployments:`` options itself.
    """
    return build_application(args)


def build_application(args: dict[str, Any] | None = None,
                      deployment_options: dict[str, dict[str, Any]] | None = None) -> Application:
    """``build_app`` for callers that are not Serve's CLI (``jaffnet serve``, the benchmark, tests):
    ``deployment_options``, keyed by deployment name, are ``Deployment.options`` kwargs."""
    settings = ServingConfig(**(args or {}))
    tracking_uri = configure_tracking(settings.tracking_uri)  # an entry point (jaffnet serve, Serve's CLI)
    settings = settings.model_copy(update={"tracking_uri": tracking_uri,
                                           "model_uri": resolve_model_uri(settings.model_uri),
                                           "decision_log": resolve_log_folder(settings.decision_log),
                                           "access": resolve_keys_file(settings.access)})
    config = settings.model_dump()
    options = deployment_options or {}
    model = ModelDeployment.options(**options.get("ModelDeployment", {})).bind(config)
    return InspectionAPI.options(**options.get("InspectionAPI", {})).bind(model, config)
