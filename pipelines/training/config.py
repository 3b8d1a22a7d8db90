"""The training config: one flat YAML file, overridable key by key with ``--set key=value``.

``TrainConfig`` is a pydantic model: each key's type and rule is stated once, beside the
key; the model keys go through JAFFNet's own argument checks (``jaffnet.architecture``)
and the input keys through the input contract's (``jaffnet.contract``). ``load_config``
merges (packaged defaults) <- (an optional YAML file) <- (overrides), so a bad value or
an unknown key fails with a message naming the key before any Ray work starts.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core.core_schema import ValidationInfo

from jaffnet.architecture import check_encoder_depth, check_width, validate_dilation_rates
from jaffnet.contract import (InputContract, check_flip_views, check_image_size, check_input_mode,
                              check_normalization, check_tile_overlap)
from jaffnet.encoders.pretrained import IMAGENET, imagenet_file
from jaffnet.metrics import LOWER_IS_BETTER, METRIC_COLUMNS
from pipelines import storage
from pipelines.config_rules import rule as _rule
from pipelines.data.augment import AugmentConfig
from pipelines.evaluation.calibration import MAX_ESCAPE_RATE, OBJECTIVES, Objective

DEFAULT_CONFIG = "train.yaml"  # packaged beside this module; configs/train.yaml links to it
DEMO_CONFIG = Path(__file__).with_name("demo.yaml")  # `jaffnet demo`'s keys over train.yaml
HARD_DEMO_CONFIG = Path(__file__).with_name("demo_hard.yaml")  # `jaffnet demo --difficulty hard`'s over demo.yaml

# Validation metrics the training loop reports each epoch (``ray.train.report``) that can pick the best epoch.
VALIDATION_METRICS = tuple(f"val_{name}" for name in (*METRIC_COLUMNS, "image_auroc", "overkill_rate",
                                                       "escape_rate", "overkill_at_escape"))
SELECTABLE_METRICS = ("val_loss", *VALIDATION_METRICS)

DEFAULT_ESCAPE_TARGET = 0.05
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _one_of(choices: tuple[str, ...]) -> AfterValidator:
    return _rule(lambda value: value in choices, f"{', '.join(choices[:-1])} or {choices[-1]}")


def _location(value: str) -> str:
    """A URI's form (no credentials or options in it) is checked now, before Ray starts;
    whether it can be reached is found out where it is first used."""
    if storage.is_uri(value):
        try:
            storage.resolve(value)
        except storage.StorageError as exc:
            raise ValueError(str(exc)) from None
    return value


_AT_LEAST_0 = _rule(lambda value: value >= 0, ">= 0")
_AT_LEAST_1 = _rule(lambda value: value >= 1, ">= 1")
_POSITIVE = _rule(lambda value: value > 0, "> 0")
_NAME = _rule(lambda value: _NAME_PATTERN.match(value), "letters, digits, '_', '.' or '-'")


class TrainConfig(BaseModel):
    """Strictly typed (ints are accepted for floats, nothing else is converted), frozen,
    unknown keys refused. Construction raises ``ValueError`` naming each bad key."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", protected_namespaces=())

    # model: JAFFNet's own argument checks
    encoder_depth: Annotated[int, AfterValidator(check_encoder_depth)] = 18
    width: Annotated[float, AfterValidator(check_width)] = 1.0
    dilation_rates: Annotated[list[int], BeforeValidator(lambda rates: list(validate_dilation_rates(rates)))] = \
        Field(default_factory=lambda: [1, 2, 4])
    encoder_weights: str | None = None
    # initial defect probability of the side-output heads (their bias starts at its logit, the
    # RetinaNet prior); null: PyTorch's default init, as the authors train
    head_prior: Annotated[float, _rule(lambda value: 0 < value < 1, "in (0, 1) (or null: default init)")] | None = None
    # data: the input contract stored with the model (jaffnet.contract), by its own checks
    image_size: Annotated[int, AfterValidator(check_image_size)] = 256
    input_mode: Annotated[str, AfterValidator(lambda mode: check_input_mode(mode, "input_mode"))] = "resize"
    tile_overlap: Annotated[float, AfterValidator(check_tile_overlap)] = 0.25
    normalization: Annotated[str, AfterValidator(check_normalization)] = "imagenet"
    # mirrored views averaged at inference (1, 2, 4 or 8: jaffnet.contract); validation calibrates with them
    flip_views: Annotated[int, AfterValidator(check_flip_views)] = 1
    # loss
    w_bce: Annotated[float, _AT_LEAST_0] = 1.0
    w_ssim: Annotated[float, _AT_LEAST_0] = 1.0
    w_iou: Annotated[float, _AT_LEAST_0] = 1.0
    bce_pos_weight: Annotated[float, _POSITIVE] = 1.0  # > 1: defect pixels weigh more in the BCE term
    # optimisation
    epochs: Annotated[int, _AT_LEAST_1] = 50
    batch_size: Annotated[int, _rule(lambda value: value >= 2, ">= 2 (BatchNorm in the DRF global branch)")] = 8
    optimizer: Annotated[str, _one_of(("adam", "adamw", "sgd"))] = "adam"
    lr: Annotated[float, _POSITIVE] = 1e-3
    # linear: lr is for a global batch of lr_reference_batch and scales with the real one (more workers)
    lr_scaling: Annotated[str, _one_of(("none", "linear", "sqrt"))] = "none"
    lr_reference_batch: Annotated[int, _AT_LEAST_1] = 8
    warmup_epochs: Annotated[int, _AT_LEAST_0] = 0
    grad_clip_norm: Annotated[float, _POSITIVE] | None = None
    weight_decay: Annotated[float, _AT_LEAST_0] = 0.0
    momentum: Annotated[float, _rule(lambda value: 0 <= value < 1, "in [0, 1)")] = 0.9
    scheduler: Annotated[str, _one_of(("cosine", "step", "none"))] = "cosine"
    step_size: Annotated[int, _AT_LEAST_1] = 20
    gamma: Annotated[float, _rule(lambda value: 0 < value <= 1, "in (0, 1]")] = 0.1
    mixed_precision: bool = True
    seed: int = 0
    # validate/checkpoint an exponential moving average of the weights
    ema_decay: Annotated[float, _rule(lambda value: 0 < value < 1, "in (0, 1) (or null: no averaging)")] | None = None
    # image-level decision (jaffnet.decision), calibrated on the validation split
    min_defect_area_px: Annotated[int, _rule(lambda value: value >= 0, ">= 0 (0: off)")] = 0
    # escape-first: the lowest overkill with at most 5 % of val's defective frames passed (balanced
    # error, with a stored warning, when val holds too few defective frames to support the target)
    calibrate_for: Annotated[str, _one_of(OBJECTIVES)] = MAX_ESCAPE_RATE
    calibration_target: Annotated[float, _AT_LEAST_0] = 0.05  # the rate (or, for escape_cost, the cost C)
    # validation, selection, registry
    best_metric: Annotated[str, _one_of(SELECTABLE_METRICS)] = "val_weighted_f"
    # model inputs per forward pass when validating (null: batch_size); no gradients are kept there
    val_batch_size: Annotated[int, _AT_LEAST_1] | None = None
    patience: Annotated[int, _rule(lambda value: value >= 1, ">= 1 (or null: no early stopping)")] | None = None
    num_overlays: Annotated[int, _AT_LEAST_0] = 4
    model_name: Annotated[str, _NAME] = "jaffnet"
    experiment: Annotated[str, _NAME] = "jaffnet"
    artifact_location: Annotated[str, AfterValidator(_location)] = ""
    # Ray Train
    num_workers: Annotated[int, _AT_LEAST_1] = 2
    use_gpu: bool = False
    cpus_per_worker: Annotated[float, _POSITIVE] = 0.5
    torch_threads: Annotated[int, _rule(lambda value: value >= 0, ">= 0 (0: automatic)")] = 0
    storage_path: Annotated[str, _rule(str.strip, "a non-empty folder or URI"), AfterValidator(_location)] = \
        "ray_results"
    max_failures: Annotated[int, _rule(lambda value: value >= -1, ">= 0 (or -1: unlimited)")] = 1
    ray_log_level: Annotated[str, _one_of(_LOG_LEVELS)] = "WARNING"
    # the training augmentation, a section of its own: `--set augment.crop_p=0.5`
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @field_validator("w_iou")
    @classmethod
    def _some_loss(cls, w_iou: float, info: ValidationInfo) -> float:
        if w_iou == 0 and info.data.get("w_bce") == 0 and info.data.get("w_ssim") == 0:
            raise ValueError("must be > 0 when w_bce and w_ssim are 0 (the loss would be 0), got 0.0")
        return w_iou

    @field_validator("encoder_weights")
    @classmethod
    def _imagenet_fits(cls, weights: str | None, info: ValidationInfo) -> str | None:
        if weights == IMAGENET:
            if info.data.get("width", 1.0) != 1.0:
                raise ValueError(f"imagenet must go with width 1.0 (torchvision's channel counts), got width "
                                 f"{info.data.get('width')}")
            imagenet_file(info.data.get("encoder_depth", 18))  # raises for a depth without published weights
        return weights

    @field_validator("calibration_target")
    @classmethod
    def _a_target(cls, target: float, info: ValidationInfo) -> float:
        Objective(info.data.get("calibrate_for", MAX_ESCAPE_RATE), target)  # raises "<method> must be ..."
        return target

    @field_validator("warmup_epochs")
    @classmethod
    def _warmup_within_epochs(cls, warmup: int, info: ValidationInfo) -> int:
        epochs = info.data.get("epochs")
        if epochs is not None and warmup >= epochs:
            raise ValueError(f"must be < epochs ({epochs}), got {warmup}")
        return warmup

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ValueError(_describe(exc)) from None

    @property
    def best_mode(self) -> str:
        """"min" for losses and MAE, "max" for the other metrics."""
        return "min" if self.best_metric in ("val_loss", *(f"val_{m}" for m in LOWER_IS_BETTER)) else "max"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def model_arguments(self) -> dict[str, Any]:
        """``JAFFNet(**cfg.model_arguments())``: the model this config trains."""
        return {"encoder_depth": self.encoder_depth, "width": self.width,
                "dilation_rates": tuple(self.dilation_rates)}

    @property
    def validation_batch(self) -> int:
        return self.val_batch_size or self.batch_size

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.num_workers

    @property
    def effective_lr(self) -> float:
        """``lr``, scaled with the global batch when ``lr_scaling`` says so."""
        ratio = self.global_batch / self.lr_reference_batch
        return self.lr * {"none": 1.0, "linear": ratio, "sqrt": ratio ** 0.5}[self.lr_scaling]

    @property
    def metric_escape_target(self) -> float:
        """The escape target ``val_overkill_at_escape`` is measured at: the calibration's own
        when it calibrates for an escape rate, else 5 %."""
        return self.calibration_target if self.calibrate_for == MAX_ESCAPE_RATE else DEFAULT_ESCAPE_TARGET

    def objective(self) -> Objective:
        """How validation calibrates the image threshold."""
        return Objective(self.calibrate_for, self.calibration_target)

    def input_contract(self) -> InputContract:
        return InputContract(image_size=self.image_size, mode=self.input_mode, tile_overlap=self.tile_overlap,
                             normalization=self.normalization, flip_views=self.flip_views)

    def replaced(self, **values: Any) -> TrainConfig:
        """This config with ``values`` in place of its own, validated like any other."""
        return TrainConfig.from_dict({**self.to_dict(), **values})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """From a mapping, e.g. a config stored with an older checkpoint or search (retired keys are dropped)."""
        return cls(**{str(key): value for key, value in values.items() if key not in RETIRED_KEYS})

    def params(self) -> dict[str, str]:
        """Every value as a flat MLflow param: a section's keys as ``augment.crop_p``."""
        flat = {}
        for key, value in self.to_dict().items():
            if key in SECTIONS:
                flat.update({f"{key}.{name}": str(inner) for name, inner in value.items()})
            else:
                flat[key] = str(value)
        return flat


# Config sections: keys of their own, set one by one (`--set augment.crop_p=0.5`, or a file's `augment:`
# mapping with some of them); the others keep their values.
SECTIONS: dict[str, type[BaseModel]] = {"augment": AugmentConfig}
# Keys earlier versions stored (in checkpoints' and searches' configs) that are no longer settings.
RETIRED_KEYS = ("debug_fail_once_at_epoch",)


def config_keys() -> list[str]:
    """Every settable key, a section's as ``section.key``."""
    return [key for name in TrainConfig.model_fields
            for key in ([f"{name}.{inner}" for inner in SECTIONS[name].model_fields] if name in SECTIONS else [name])]


_TYPE_REQUIREMENTS = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
                      "string_type": "a string", "list_type": "a list of integers"}


def did_you_mean(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key_message(*keys: str) -> str:
    named = "; ".join(f"unknown config key {key!r}{did_you_mean(key, config_keys())}" for key in keys)
    return f"{named}; valid keys: {', '.join(config_keys())}"


def _describe(exc: ValidationError) -> str:
    """pydantic's errors as ``config key 'k' <problem>``; unknown keys last, with the valid ones."""
    unknown, problems = [], []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])  # a section's key as augment.crop_p
        if error["type"] == "extra_forbidden":
            unknown.append(key)
            continue
        if error["type"] == "value_error":  # a rule, or a model/contract check ("<key> must ...")
            problem = str(error["ctx"]["error"]).removeprefix(f"{key} ")
            problem = problem if problem.startswith("must") else f": {problem}"
        elif error["input"] is None:
            problem = "must not be null"
        else:
            problem = f"must be {_TYPE_REQUIREMENTS.get(error['type'], error['msg'])}, got {error['input']!r}"
        problems.append(f"config key {key!r}{'' if problem.startswith(':') else ' '}{problem}")
    return "; ".join(problems + [unknown_key_message(*unknown)] * bool(unknown))


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


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2's floats without a dot or an exponent sign (``1e-4``,
    ``3E5``), which YAML 1.1 reads as strings: ``--set lr=1e-4`` is a number, as anyone typing it means."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 (a SafeLoader subclass)


def parse_yaml_mapping(text: str, source: str, error: type[Exception] = ValueError) -> dict[str, Any]:
    try:
        values = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise error(f"{source} is not valid YAML: {exc}") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise error(f"{source} must hold a mapping of keys, got {type(values).__name__}")
    return values


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (``0.5``, ``true``, ``[1,2,4]``, ``null``); a section's
    ``augment.crop_p=0.5`` gives ``("augment", {"crop_p": 0.5})``, for :func:`merge_values`."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"override {text!r} must look like key=value")
    if key not in config_keys():
        raise ValueError(unknown_key_message(key))
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ValueError(f"config key {key!r}: cannot parse value {raw!r}: {exc}") from exc
    section, dot, inner = key.partition(".")
    return (section, {inner: value}) if dot else (key, value)


def merge_values(values: dict[str, Any], update: dict[str, Any]) -> None:
    """``update``'s keys into ``values``; a section's mapping is merged key by key, so setting one
    augmentation key keeps the others."""
    for key, value in update.items():
        if key in SECTIONS and isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value


def merged_values(*layers: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The packaged defaults, then each of ``layers`` (mappings of any subset of keys), then
    ``key=value`` overrides: the values a ``TrainConfig`` is built from."""
    values = read_yaml(None)
    for layer in layers:
        merge_values(values, layer)
    for override in overrides:
        merge_values(values, dict([parse_override(override)]))
    return values


def load_config(path: str | Path | list[str | Path] | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Packaged defaults, then ``path`` (any subset of keys; a list: each file in turn), then
    ``key=value`` overrides."""
    files = path if isinstance(path, list) else [] if path is None else [path]
    return TrainConfig.from_dict(merged_values(*(read_yaml(file) for file in files), overrides=overrides))


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(), sort_keys=False, default_flow_style=None)
