"""The training config: one flat YAML file, overridable key by key with ``--set key=value``.

``load_config`` merges (packaged defaults) <- (an optional YAML file) <- (overrides) and
validates every value, so a bad value fails with a message naming its key before any
Ray work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from jaffnet.contract import INPUT_MODES, INPUT_MULTIPLE, InputContract
from jaffnet.metrics import LOWER_IS_BETTER, METRIC_COLUMNS
from pipelines import storage

DEFAULT_CONFIG = "train.yaml"  # packaged beside this module; configs/train.yaml links to it

# Validation metrics the training loop reports each epoch (``ray.train.report``) that can pick the best epoch.
VALIDATION_METRICS = tuple(f"val_{name}" for name in (*METRIC_COLUMNS, "image_auroc", "overkill_rate",
                                                       "escape_rate"))
SELECTABLE_METRICS = ("val_loss", *VALIDATION_METRICS)

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class TrainConfig:
    # model
    encoder_depth: int = 18
    width: float = 1.0
    dilation_rates: list[int] = field(default_factory=lambda: [1, 2, 4])
    encoder_weights: str | None = None
    # data: the input contract stored with the model (jaffnet.contract)
    image_size: int = 256
    input_mode: str = "resize"
    tile_overlap: float = 0.25
    # loss
    w_bce: float = 1.0
    w_ssim: float = 1.0
    w_iou: float = 1.0
    # optimisation
    epochs: int = 50
    batch_size: int = 8
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    scheduler: str = "cosine"
    step_size: int = 20
    gamma: float = 0.1
    mixed_precision: bool = True
    seed: int = 0
    ema_decay: float | None = None  # validate/checkpoint an exponential moving average of the weights
    # image-level decision (jaffnet.decision), calibrated on the validation split
    min_defect_area_px: int = 0
    escape_cost: float = 1.0
    # validation, selection, registry
    best_metric: str = "val_weighted_f"
    patience: int | None = None
    num_overlays: int = 4
    model_name: str = "jaffnet"
    experiment: str = "jaffnet"
    artifact_location: str = ""
    # Ray Train
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 0.5
    torch_threads: int = 0
    storage_path: str = "ray_results"
    max_failures: int = 1
    ray_log_level: str = "WARNING"
    debug_fail_once_at_epoch: int | None = None

    def __post_init__(self) -> None:
        validate(self)

    @property
    def best_mode(self) -> str:
        """"min" for losses and MAE, "max" for the other metrics."""
        return "min" if self.best_metric in ("val_loss", *(f"val_{m}" for m in LOWER_IS_BETTER)) else "max"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def input_contract(self) -> InputContract:
        return InputContract(image_size=self.image_size, mode=self.input_mode, tile_overlap=self.tile_overlap)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        unknown = sorted(set(values) - set(_FIELDS))
        if unknown:
            raise ValueError(_unknown_key_message(unknown[0]))
        return cls(**{key: _coerce(key, value) for key, value in values.items()})


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _unknown_key_message(key: str) -> str:
    close = difflib.get_close_matches(key, list(_FIELDS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown config key {key!r}{hint}; valid keys: {', '.join(_FIELDS)}"


def _coerce(key: str, value: Any) -> Any:
    """Check a value's type against the field's annotation; ints are accepted for floats."""
    annotation = str(_FIELDS[key].type)
    optional = "None" in annotation
    if value is None:
        if optional:
            return None
        raise ValueError(f"config key {key!r} must not be null")
    if annotation.startswith("list"):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ValueError(f"config key {key!r} must be a list of integers, got {value!r}")
        return list(value)
    base = annotation.split("|")[0].strip()
    if base == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"config key {key!r} must be true or false, got {value!r}")
        return value
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config key {key!r} must be an integer, got {value!r}")
        return value
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config key {key!r} must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"config key {key!r} must be a string, got {value!r}")
    return value


def _require(condition: bool, key: str, message: str, value: Any) -> None:
    if not condition:
        raise ValueError(f"config key {key!r} {message}, got {value!r}")


def _check_location(key: str, value: str) -> None:
    """A URI's form (no credentials or options in it) is checked now, before Ray starts;
    whether it can be reached is found out where it is first used."""
    if storage.is_uri(value):
        try:
            storage.resolve(value)
        except storage.StorageError as exc:
            raise ValueError(f"config key {key!r}: {exc}") from None


def validate(cfg: TrainConfig) -> None:
    """Range and choice checks; types were checked by ``_coerce``."""
    for key in _FIELDS:
        _coerce(key, getattr(cfg, key))
    _require(cfg.encoder_depth in (18, 34), "encoder_depth", "must be 18 or 34", cfg.encoder_depth)
    _require(0 < cfg.width <= 4, "width", "must be in (0, 4]", cfg.width)
    _require(len(cfg.dilation_rates) > 0 and all(r >= 1 for r in cfg.dilation_rates), "dilation_rates",
             "must be a non-empty list of positive integers", cfg.dilation_rates)
    _require(cfg.image_size >= INPUT_MULTIPLE and cfg.image_size % INPUT_MULTIPLE == 0, "image_size",
             f"must be a positive multiple of {INPUT_MULTIPLE}", cfg.image_size)
    _require(cfg.input_mode in INPUT_MODES, "input_mode", f"must be one of {', '.join(INPUT_MODES)}", cfg.input_mode)
    _require(0 <= cfg.tile_overlap < 1, "tile_overlap", "must be in [0, 1)", cfg.tile_overlap)
    _require(cfg.min_defect_area_px >= 0, "min_defect_area_px", "must be >= 0 (0: off)", cfg.min_defect_area_px)
    _require(cfg.escape_cost > 0, "escape_cost", "must be > 0", cfg.escape_cost)
    for key in ("w_bce", "w_ssim", "w_iou"):
        _require(getattr(cfg, key) >= 0, key, "must be >= 0", getattr(cfg, key))
    _require(cfg.w_bce + cfg.w_ssim + cfg.w_iou > 0, "w_bce", "and w_ssim, w_iou must not all be 0", cfg.w_bce)
    _require(cfg.epochs >= 1, "epochs", "must be >= 1", cfg.epochs)
    _require(cfg.batch_size >= 2, "batch_size", "must be >= 2 (BatchNorm in the DRF global branch)", cfg.batch_size)
    _require(cfg.optimizer in ("adam", "adamw", "sgd"), "optimizer", "must be adam, adamw or sgd", cfg.optimizer)
    _require(cfg.lr > 0, "lr", "must be > 0", cfg.lr)
    _require(cfg.weight_decay >= 0, "weight_decay", "must be >= 0", cfg.weight_decay)
    _require(0 <= cfg.momentum < 1, "momentum", "must be in [0, 1)", cfg.momentum)
    _require(cfg.scheduler in ("cosine", "step", "none"), "scheduler", "must be cosine, step or none", cfg.scheduler)
    _require(cfg.step_size >= 1, "step_size", "must be >= 1", cfg.step_size)
    _require(0 < cfg.gamma <= 1, "gamma", "must be in (0, 1]", cfg.gamma)
    _require(cfg.best_metric in SELECTABLE_METRICS, "best_metric", f"must be one of {', '.join(SELECTABLE_METRICS)}",
             cfg.best_metric)
    _require(cfg.num_overlays >= 0, "num_overlays", "must be >= 0", cfg.num_overlays)
    if cfg.ema_decay is not None:
        _require(0 < cfg.ema_decay < 1, "ema_decay", "must be in (0, 1) (or null: no averaging)", cfg.ema_decay)
    if cfg.patience is not None:
        _require(cfg.patience >= 1, "patience", "must be >= 1 (or null: no early stopping)", cfg.patience)
    for key in ("model_name", "experiment"):
        _require(bool(_NAME_PATTERN.match(getattr(cfg, key))), key,
                 "must be letters, digits, '_', '.' or '-'", getattr(cfg, key))
    _require(cfg.num_workers >= 1, "num_workers", "must be >= 1", cfg.num_workers)
    _require(cfg.cpus_per_worker > 0, "cpus_per_worker", "must be > 0", cfg.cpus_per_worker)
    _require(cfg.torch_threads >= 0, "torch_threads", "must be >= 0 (0: automatic)", cfg.torch_threads)
    _require(bool(cfg.storage_path.strip()), "storage_path", "must not be empty", cfg.storage_path)
    for key in ("storage_path", "artifact_location"):
        _check_location(key, getattr(cfg, key))
    _require(cfg.max_failures >= -1, "max_failures", "must be >= 0 (or -1: unlimited)", cfg.max_failures)
    _require(cfg.ray_log_level in _LOG_LEVELS, "ray_log_level", f"must be one of {', '.join(_LOG_LEVELS)}",
             cfg.ray_log_level)
    if cfg.debug_fail_once_at_epoch is not None:
        _require(0 <= cfg.debug_fail_once_at_epoch < cfg.epochs, "debug_fail_once_at_epoch",
                 "must be an epoch index in [0, epochs)", cfg.debug_fail_once_at_epoch)


def read_yaml(path: str | Path | None) -> dict[str, Any]:
    """A config file's mapping; ``None`` reads the packaged defaults."""
    if path is None:
        text = resources.files(__package__).joinpath(DEFAULT_CONFIG).read_text()
        return parse_yaml_mapping(text, f"packaged {DEFAULT_CONFIG}")
    return read_yaml_file(path)


def read_yaml_file(path: str | Path, error: type[Exception] = ValueError, what: str = "config file") -> dict[str, Any]:
    """A YAML file that must hold a mapping (empty file: ``{}``); problems raise ``error``."""
    path = Path(path)
    if not path.is_file():
        raise (FileNotFoundError if error is ValueError else error)(f"{what} {path} not found")
    return parse_yaml_mapping(path.read_text(), str(path), error)


def parse_yaml_mapping(text: str, source: str, error: type[Exception] = ValueError) -> dict[str, Any]:
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{source} is not valid YAML: {exc}") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise error(f"{source} must hold a mapping of keys, got {type(values).__name__}")
    return values


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (``0.5``, ``true``, ``[1,2,4]``, ``null``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"override {text!r} must look like key=value")
    if key not in _FIELDS:
        raise ValueError(_unknown_key_message(key))
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ValueError(f"config key {key!r}: cannot parse value {raw!r}: {exc}") from exc
    return key, value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Packaged defaults, then ``path`` (any subset of keys), then ``key=value`` overrides."""
    values = read_yaml(None)
    if path is not None:
        values.update(read_yaml(path))
    for override in overrides:
        key, value = parse_override(override)
        values[key] = value
    return TrainConfig.from_dict(values)


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
