"""Service settings: the application ``args`` of ``serve_config.yaml``.

Replica counts, autoscaling, ``max_ongoing_requests`` and CPU/GPU per replica are Serve
deployment options and live in the YAML's ``deployments:`` section; everything the
code itself reads is here, validated (unknown keys are refused so a typo in the YAML
fails the deployment instead of being ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from pipelines.codec import OPENCV_MAX_PIXELS
from serving.access import AccessSettings
from serving.decision_log import DecisionLogSettings

DEFAULT_CONFIG_PATH = Path(__file__).with_name("serve_config.yaml")
DEFAULT_MODEL_URI = "models:/jaffnet@champion"


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # Which model: a registry URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/...)
    # or a local save_pretrained directory.
    model_uri: str = DEFAULT_MODEL_URI
    tracking_uri: str | None = None  # None: MLFLOW_TRACKING_URI, else ./mlflow.db
    # jaffnet.inference backend: eager, fused, compile, onnx, cpu-bf16, int8, cuda-fp16, cuda-bf16. int8
    # serves the file set `jaffnet export --format int8` logged to the version's MLflow run (its
    # accuracy gate passed); a version without one fails at start.
    backend: str = "eager"
    backend_options: dict[str, Any] = Field(default_factory=dict)  # e.g. {threads: 2}
    device: str | None = None  # None: cuda when the replica has a GPU, else cpu

    # Batching in the model deployment; max_ongoing_requests must be >= max_batch_size.
    max_batch_size: int = Field(8, ge=1, le=256)
    batch_wait_timeout_s: float = Field(0.01, ge=0, le=5)

    # Overrides of the model's calibrated decision rule (None: the registered values). The
    # input contract (size, resize/tile, overlap) is the model's own and cannot be overridden:
    # it is what the registered metrics were measured with.
    threshold: float | None = Field(None, ge=0, le=1, description="pixel threshold (mask, regions)")
    image_threshold: float | None = Field(None, ge=0, le=1, description="image-score threshold (OK/NG)")

    # Input limits.
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    upload_timeout_s: float = Field(10.0, gt=0, le=600, description="seconds a client may take to send its "
                                                                      "body; slower uploads get 408")
    max_pixels: int = Field(16384 * 1024, ge=1024, le=OPENCV_MAX_PIXELS,
                            description="width x height above which a frame gets 413")
    max_regions: int = Field(100, ge=0, description="regions listed per response, largest first")
    # Work per frame, checked from the header before decoding (413 beyond).
    max_inputs_per_frame: int = Field(256, ge=1, le=65536, description="model inputs (tiles) one frame may need")
    min_frame_side: int = Field(16, ge=1, description="frames with a shorter side are refused")
    retry_after_s: int = Field(2, ge=1, le=3600, description="Retry-After of a 503 when the model is busy")
    # Admission (serving.admission): model inputs one ingress replica keeps at the model at
    # once; a frame that does not fit gets 503 + Retry-After. On a CPU each input queued
    # ahead of a frame adds about one forward to its latency; a GPU batch costs about one.
    max_inputs_in_flight: int = Field(1, ge=1, le=4096)
    # Significant bits of 16-bit frames without a PNG sBIT chunk (None: inferred from each
    # frame's maximum, as ingestion does; the reply's image block says which applied).
    bit_depth: int | None = Field(None, ge=9, le=16)

    # Where decisions are recorded (serving.decision_log); folder null: not recorded. The audit
    # log (serving.audit_log) lives in the same folder.
    decision_log: DecisionLogSettings = Field(default_factory=DecisionLogSettings)
    # Keys, roles, limits per key, Host allowlist, Origin check (serving.access); keys_file null:
    # every route open, to loopback clients only.
    access: AccessSettings = Field(default_factory=AccessSettings)


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
