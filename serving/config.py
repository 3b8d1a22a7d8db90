"""Service settings: the application ``args`` of ``serve_config.yaml``.

Replica counts, autoscaling, ``max_ongoing_requests`` and CPU/GPU per replica are Serve
deployment options and live in the YAML's ``deployments:`` section; everything the
code itself reads is here, validated (unknown keys are refused so a typo in the YAML
fails the deployment instead of being ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_CONFIG_PATH = Path(__file__).with_name("serve_config.yaml")
DEFAULT_MODEL_URI = "models:/jaffnet@champion"
# Used when the registered model's metadata lacks them.
DEFAULT_THRESHOLD = 0.5
DEFAULT_IMAGE_SIZE = 256


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # Which model: a registry URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/...)
    # or a local save_pretrained directory.
    model_uri: str = DEFAULT_MODEL_URI
    tracking_uri: str | None = None  # None: MLFLOW_TRACKING_URI, else ./mlflow.db
    backend: str = "eager"  # jaffnet.inference backend: eager, fused, compile, onnx, cuda-fp16, ...
    backend_options: dict[str, Any] = Field(default_factory=dict)  # e.g. {threads: 2}
    device: str | None = None  # None: cuda when the replica has a GPU, else cpu

    # Batching in the model deployment; max_ongoing_requests must be >= max_batch_size.
    max_batch_size: int = Field(8, ge=1, le=256)
    batch_wait_timeout_s: float = Field(0.01, ge=0, le=5)

    # Overrides of the model's metadata (None: use the registered values).
    image_size: int | None = Field(None, ge=32, le=4096)
    threshold: float | None = Field(None, ge=0, le=1)

    # Tiling of frames larger than the model input.
    tile_overlap: float = Field(0.25, ge=0, lt=1, description="fraction of the tile shared with its neighbour")
    stitch: Literal["mean", "max"] = "mean"

    # Input limits.
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(16384 * 1024, ge=1024, description="width x height above which a frame gets 413")
    max_regions: int = Field(100, ge=0, description="regions listed per response, largest first")

    @model_validator(mode="after")
    def _image_size_multiple_of_32(self) -> ServingConfig:
        if self.image_size is not None and self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32, got {self.image_size}")
        return self

    def tile_overlap_px(self, tile: int) -> int:
        return min(int(round(self.tile_overlap * tile)), tile - 1)


def read_serve_config(path: str | Path = DEFAULT_CONFIG_PATH) -> dict[str, Any]:
    """The Serve config YAML as a dict (the same file ``serve run`` / ``serve deploy`` take)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Serve config {path} not found")
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or not config.get("applications"):
        raise ValueError(f"{path} is not a Serve config: it has no 'applications' list")
    return config


def application_section(config: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The named application of a Serve config (the first one if no name is given)."""
    applications = config["applications"]
    if name is None:
        return applications[0]
    for application in applications:
        if application.get("name") == name:
            return application
    raise ValueError(f"no application named {name!r} in the Serve config")


def deployment_options(application: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``deployments:`` entries keyed by deployment name, as ``Deployment.options`` kwargs."""
    options = {}
    for entry in application.get("deployments") or []:
        entry = dict(entry)
        options[entry.pop("name")] = entry
    return options
