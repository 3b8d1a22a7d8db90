"""The model deployment: one registry version, batched forwards, a health check.

Each call carries one model input (``S x S x 3`` uint8 RGB: a resized frame or a native
tile, as the model's input contract says; the ingress cuts frames with
``jaffnet.frames``); ``@serve.batch`` gathers the inputs of concurrent frames (and the
many tiles of one large frame) into one forward. Batches only fill if the deployment's
``max_ongoing_requests`` is at least ``max_batch_size`` (set in ``serve_config.yaml``).
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import torch
from ray import serve

from jaffnet.frames import model_inputs
from jaffnet.inference import backend_options, build_predictor
from jaffnet.io import WeightsError
from pipelines.registry import configure_tracking, download_int8, load_model
from serving.config import ServingConfig

logger = logging.getLogger("ray.serve")

UNHEALTHY_AFTER_FAILED_BATCHES = 3
INT8_BACKEND, INT8_PATH_OPTION = "int8", "quantized_path"  # jaffnet.inference's int8 backend and its file-set option


class ModelLoadError(RuntimeError):
    """The configured model cannot be loaded; the replica (and the deployment) fails to start."""


def _default_device(settings: ServingConfig) -> str | None:
    """The configured device; else the GPU when the replica has one and the backend can use it.

    ``cuda-*`` backends pick the GPU themselves and ``onnx``/``cpu-*`` run on the CPU only.
    """
    if settings.device:
        return settings.device
    if torch.cuda.is_available() and settings.backend in ("eager", "fused", "compile"):
        return "cuda"
    return None


def predictor_options(settings: ServingConfig, loaded) -> dict:
    """``backend_options`` completed from the model: the ``onnx`` backend exports at the
    contract's input size; ``int8`` runs the file set ``jaffnet export --format int8`` logged
    to the version's MLflow run (unless ``quantized_path`` names one), whose weights
    fingerprint the backend checks against the loaded weights."""
    options = dict(settings.backend_options)
    if "image_size" in backend_options(settings.backend):  # e.g. onnx exports at the tile size
        options.setdefault("image_size", loaded.contract.image_size)
    if settings.backend == INT8_BACKEND and INT8_PATH_OPTION not in options:
        try:
            options[INT8_PATH_OPTION] = str(download_int8(loaded))
        except LookupError as exc:
            raise ModelLoadError(f"backend 'int8': {exc}") from exc
    return options


@serve.deployment(max_ongoing_requests=32, health_check_period_s=10, health_check_timeout_s=30)
class ModelDeployment:
    def __init__(self, config: dict):
        settings = ServingConfig(**config)
        configure_tracking(settings.tracking_uri)  # a replica is its own process: this is its entry point
        try:
            loaded = load_model(settings.model_uri)
        except (LookupError, FileNotFoundError, WeightsError) as exc:
            raise ModelLoadError(f"cannot load model {settings.model_uri!r}: {exc}") from exc
        metadata = loaded.metadata
        try:
            contract = loaded.contract
            rule = loaded.rule.with_overrides(settings.threshold, settings.image_threshold)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
        image_size = contract.image_size
        self.normalization = contract.normalization
        try:
            options = predictor_options(settings, loaded)
            self.predictor = build_predictor(loaded.model, backend=settings.backend,
                                             device=_default_device(settings), **options)
        except ModelLoadError:
            raise
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"cannot build the {settings.backend!r} predictor: {exc}") from exc
        self.card = {
            "name": loaded.name or metadata.get("model_name") or "jaffnet",
            "version": loaded.version or "local",
            "run_id": loaded.run_id,
            "source": settings.model_uri,
            "contract": contract.to_dict(),
            "rule": rule.to_dict(),
            "threshold": rule.pixel_threshold,
            "image_size": image_size,
            "metrics": metadata.get("metrics", {}),
            "architecture": loaded.model.config,
            "backend": settings.backend,
            "device": self.predictor.device,
            "torch_threads": torch.get_num_threads(),  # Ray sets OMP_NUM_THREADS to the replica's CPUs
        }
        self.predict_input.set_max_batch_size(settings.max_batch_size)
        self.predict_input.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        self._failed_batches = 0
        self._warm_up()
        logger.info("serving %s version %s on %s (%s backend)", self.card["name"], self.card["version"],
                    self.card["device"], settings.backend)

    def _warm_up(self) -> None:
        """One forward before taking traffic, so the first request does not pay for it."""
        size = self.card["image_size"]
        self.predictor(np.zeros((1, 3, size, size), dtype=np.float32))

    def info(self) -> dict:
        return self.card

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def predict_input(self, inputs: list[np.ndarray]) -> list[dict]:
        """uint8 RGB model inputs -> ``{"probability": float32 S x S, "batch_size": n}`` each."""
        batch = model_inputs(inputs, self.normalization)
        try:
            # A worker thread keeps the replica's event loop free for health checks and
            # for queueing the next batch while this one runs.
            probabilities = await asyncio.to_thread(self.predictor, batch)
        except Exception:
            self._failed_batches += 1
            raise
        self._failed_batches = 0
        return [{"probability": p, "batch_size": len(inputs)} for p in probabilities]

    def check_health(self) -> None:
        if self._failed_batches >= UNHEALTHY_AFTER_FAILED_BATCHES:
            raise RuntimeError(f"the last {self._failed_batches} model batches failed")
