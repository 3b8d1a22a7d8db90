"""The search: which training-config keys are sampled, how, and how the search runs.

``load_search_space`` reads ``tuning/search_space.yaml`` (or a user file) and checks
everything it can before any Ray work starts: distribution specs, dilation sets, and
(``resolve_training``) that every sampled value is one the training config accepts.

The configurations are drawn here, not by Ray (``SearchSpace.configurations``), so that
``repeats`` can run each one with several seeds: every trial's Tune config is
``{configuration: i, seed: s, <sampled keys>: <configuration i's values>}``
(``trial_param_space``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from jaffnet.architecture import validate_dilation_rates
from pipelines.training.config import parse_yaml_mapping, read_yaml_file

DEFAULT_SEARCH_SPACE = "search_space.yaml"  # packaged beside this module
DISTRIBUTIONS = ("loguniform", "uniform", "choice", "grid")
_LISTED = ("choice", "grid")  # distributions that list their values
# The image-level decision rule each trial calibrates on val. Trials calibrated to different
# rules are not comparable: with a free calibration target a trial "wins" the overkill or
# escape metric by calibrating a rule that rejects (or passes) everything.
DECISION_RULE_KEYS = ("calibrate_for", "calibration_target", "min_defect_area_px")
# Keys that shape the search itself or its bookkeeping: one value for the whole search
# (ASHA's max_t is `epochs`, the winner is picked on `best_metric`, ...).
FIXED_PER_SEARCH = ("epochs", "best_metric", "num_workers", "cpus_per_worker", "use_gpu", "storage_path",
                    "model_name", "experiment", "artifact_location", "max_failures",
                    *DECISION_RULE_KEYS)
# Trial-config keys the search adds to the sampled ones: which configuration a trial runs
# (not a training key) and its training seed (the base config's seed + 0..repeats-1).
CONFIGURATION = "configuration"
SEED = "seed"
_TOP_LEVEL_KEYS = ("num_samples", "repeats", "max_concurrent", "seed", "scheduler", "parameters", "training")
_SCHEDULER_KEYS = ("grace_period", "reduction_factor")


class SearchSpaceError(ValueError):
    """A search-space file or value that cannot be used; the message names the culprit."""


@dataclass(frozen=True)
class Parameter:
    """One sampled training-config key: ``loguniform``/``uniform`` bounds, ``choice``
    values (one drawn per trial) or ``grid`` values (every one tried, in order)."""

    key: str
    distribution: str
    values: tuple[Any, ...]

    def to_tune(self):
        from ray import tune

        if self.distribution == "choice":
            return tune.choice([list(v) if isinstance(v, tuple) else v for v in self.values])
        if self.distribution == "grid":
            return tune.grid_search([list(v) if isinstance(v, tuple) else v for v in self.values])
        low, high = self.values
        return tune.loguniform(low, high) if self.distribution == "loguniform" else tune.uniform(low, high)

    def draw(self, rng) -> Any:
        """One value (not for ``grid``) from a numpy ``Generator``."""
        if self.distribution == "choice":
            return self.values[int(rng.integers(len(self.values)))]
        low, high = self.values
        if self.distribution == "loguniform":
            return float(math.exp(rng.uniform(math.log(low), math.log(high))))
        return float(rng.uniform(low, high))

    def describe(self) -> str:
        if self.distribution in _LISTED:
            return f"{self.distribution} of " + ", ".join(str(v) for v in self.values)
        return f"{self.distribution}({self.values[0]:g}, {self.values[1]:g})"


@dataclass
class SearchSpace:
    parameters: dict[str, Parameter]
    num_samples: int = 8
    repeats: int = 1  # runs of each configuration, with seeds base seed + 0..repeats-1
    max_concurrent: int | None = None
    seed: int | None = 0  # draws the configurations (not a training seed)
    grace_period: int | None = None  # None: a quarter of the epochs (``asha_grace_period``)
    reduction_factor: int = 2
    training: dict[str, Any] = field(default_factory=dict)
    source: str = DEFAULT_SEARCH_SPACE

    def param_space(self) -> dict[str, Any]:
        """The space as Ray Tune distributions, one per sampled key (for inspection; the search
        itself runs ``trial_param_space`` over the drawn ``configurations``)."""
        return {key: parameter.to_tune() for key, parameter in self.parameters.items()}

    def configuration_count(self) -> int:
        """``num_samples`` times every grid combination."""
        return self.num_samples * math.prod(len(p.values) for p in self.parameters.values() if p.distribution == "grid")

    def trial_count(self) -> int:
        """Trials the search makes: every configuration ``repeats`` times."""
        return self.configuration_count() * self.repeats

    def configurations(self) -> list[dict[str, Any]]:
        """The configurations the search tries, drawn with ``seed``: for each of
        ``num_samples`` draws, every grid combination (in the listed order), with the other
        keys drawn afresh for each, as Ray's own variant generator does."""
        import numpy as np

        rng = np.random.default_rng(self.seed)
        grids = [p for p in self.parameters.values() if p.distribution == "grid"]
        drawn = []
        for _ in range(self.num_samples):
            for combination in itertools.product(*(p.values for p in grids)):
                fixed = dict(zip((p.key for p in grids), combination))
                drawn.append({key: _json_value(fixed[key] if key in fixed else p.draw(rng))
                              for key, p in self.parameters.items()})
        return drawn

    def asha_grace_period(self, epochs: int) -> int:
        """Epochs every trial runs before ASHA may stop it: the file's ``grace_period`` (at
        most ``epochs``), else a quarter of the epochs, at least 1.

        Why a quarter: the training loop's cosine schedule has no warmup, so the first
        epochs run at peak learning rate and their validation metrics are mostly noise;
        one epoch (Ray's default grace) ranks trials by that noise. Ray's ASHA examples use
        about a tenth of ``max_t`` for long runs; the searches here are short (a few to a
        few tens of epochs), where a tenth is one or two epochs, so a quarter is used. With
        ``reduction_factor`` 2 it still stops half the trials at a quarter of their budget.
        """
        if self.grace_period is not None:
            return min(self.grace_period, epochs)
        return max(1, epochs // 4)

    def describe_grace(self, epochs: int) -> str:
        how = "set in the search file" if self.grace_period is not None else f"default: a quarter of {epochs}"
        return f"grace {self.asha_grace_period(epochs)} epoch(s) ({how})"

    def to_dict(self) -> dict[str, Any]:
        """The YAML layout (so a saved search reloads with ``parse_search_space``)."""
        return {
            "num_samples": self.num_samples,
            "repeats": self.repeats,
            "max_concurrent": self.max_concurrent,
            "seed": self.seed,
            "scheduler": {"grace_period": self.grace_period, "reduction_factor": self.reduction_factor},
            "parameters": {p.key: {p.distribution: [list(v) if isinstance(v, tuple) else v for v in p.values]}
                           for p in self.parameters.values()},
            "training": dict(self.training),
        }


def load_search_space(path: str | Path | None = None, *, num_samples: int | None = None,
                      max_concurrent: int | None = None, repeats: int | None = None) -> SearchSpace:
    """The packaged default (``path=None``) or a YAML file, with command-line overrides."""
    if path is None:
        source = DEFAULT_SEARCH_SPACE
        values = parse_yaml_mapping(Path(__file__).with_name(source).read_text(), source, SearchSpaceError)
    else:
        source = str(path)
        values = read_yaml_file(path, SearchSpaceError, what="search-space file")
    if num_samples is not None:
        values["num_samples"] = num_samples
    if max_concurrent is not None:
        values["max_concurrent"] = max_concurrent
    if repeats is not None:
        values["repeats"] = repeats
    return parse_search_space(values, source)


def parse_search_space(values: dict[str, Any], source: str = "search space") -> SearchSpace:
    unknown = sorted(set(values) - set(_TOP_LEVEL_KEYS))
    if unknown:
        raise SearchSpaceError(f"{source}: unknown key {unknown[0]!r}; valid keys: {', '.join(_TOP_LEVEL_KEYS)}")
    scheduler = values.get("scheduler") or {}
    if not isinstance(scheduler, dict) or set(scheduler) - set(_SCHEDULER_KEYS):
        raise SearchSpaceError(f"{source}: scheduler must be a mapping with keys {', '.join(_SCHEDULER_KEYS)}, "
                               f"got {scheduler!r}")
    parameters = values.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise SearchSpaceError(f"{source}: parameters must map at least one training-config key to a distribution")
    training = values.get("training") or {}
    if not isinstance(training, dict):
        raise SearchSpaceError(f"{source}: training must be a mapping of training-config keys, got {training!r}")
    max_concurrent = values.get("max_concurrent")
    return SearchSpace(
        parameters={key: _parse_parameter(key, spec, source) for key, spec in parameters.items()},
        num_samples=_positive_int(values.get("num_samples", 8), "num_samples", source),
        repeats=_positive_int(values.get("repeats", 1), "repeats", source),
        max_concurrent=None if max_concurrent is None else _positive_int(max_concurrent, "max_concurrent", source),
        seed=None if values.get("seed") is None else _int(values["seed"], "seed", source),
        grace_period=None if scheduler.get("grace_period") is None
        else _positive_int(scheduler["grace_period"], "scheduler.grace_period", source),
        reduction_factor=_reduction_factor(scheduler.get("reduction_factor", 2), source),
        training=dict(training),
        source=source,
    )


def resolve_training(space: SearchSpace, train_config: str | Path | None = None, overrides: list[str] = ()):
    """The base training config of every trial, after checking each sampled key and value.

    Precedence: training defaults <- ``train_config`` <- the search file's ``training``
    block <- ``overrides`` (``--set``). Every choice value and both bounds of each range
    are put through the training config's own validation, so a bad one fails here, not
    in a trial.
    """
    from pipelines.training.config import TrainConfig, did_you_mean, merged_values, read_yaml

    try:
        file_values = read_yaml(train_config) if train_config is not None else {}
        base = TrainConfig.from_dict(merged_values(file_values, space.training, overrides=overrides))
    except ValueError as exc:
        raise SearchSpaceError(f"training config for the search: {exc}") from exc
    base_values, fields = base.to_dict(), TrainConfig.model_fields
    for parameter in space.parameters.values():
        where = f"{space.source}: parameters.{parameter.key}"
        if parameter.key not in fields:
            raise SearchSpaceError(f"{where}: not a training-config key{did_you_mean(parameter.key, fields)}")
        if parameter.key in DECISION_RULE_KEYS:
            raise SearchSpaceError(
                f"{where}: {parameter.key!r} is part of the decision rule, fixed for a whole search: trials "
                "calibrated to different rules are not comparable (one could win by rejecting everything); "
                "set it for every trial with --set or the training block")
        if parameter.key in FIXED_PER_SEARCH:
            raise SearchSpaceError(f"{where}: {parameter.key!r} is fixed for a whole search; set it with --set")
        if parameter.key == SEED:
            raise SearchSpaceError(f"{where}: the training seed is not a search parameter (a search over seeds "
                                   "picks a lucky one); run each configuration with several seeds with --repeats N "
                                   "(or `repeats:`)")
        kinds = _value_types(fields[parameter.key].annotation)
        if parameter.distribution not in _LISTED and float not in kinds:
            raise SearchSpaceError(f"{where}: {parameter.distribution} samples floats but {parameter.key!r} takes "
                                   f"{' or '.join(kind.__name__ for kind in kinds)} values; use choice or grid")
        for value in parameter.values:
            try:
                TrainConfig.from_dict({**base_values, parameter.key: list(value) if isinstance(value, tuple) else value})
            except ValueError as exc:
                raise SearchSpaceError(f"{where}: value {value!r} is rejected by the training config: {exc}") from exc
    return base


def trial_seeds(base_seed: int, repeats: int) -> list[int]:
    """The training seeds of a configuration's runs. Every configuration gets the same ones,
    so configurations are compared on the same batch orders and initialisations."""
    return [base_seed + repeat for repeat in range(repeats)]


class FromConfiguration:
    """A Tune ``sample_from`` function: a trial's value of ``key`` is that of the
    configuration it runs. Tune calls it with the trial's config (Ray's own variant
    generator, outside Tune, passes the whole spec). Tune does not save the functions of a
    space: ``resume_search`` passes the space again."""

    def __init__(self, key: str, configurations: Sequence[dict[str, Any]]):
        self.key, self.configurations = key, list(configurations)

    def __call__(self, config) -> Any:
        config = config["config"] if "config" in config else config
        return self.configurations[config[CONFIGURATION]][self.key]


def trial_param_space(configurations: Sequence[dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """Ray Tune's ``param_space``: a grid of configuration index x seed, each trial taking
    its configuration's values. Tune expands the first key fastest: every configuration
    runs with the first seed, then every configuration with the second, ..."""
    from ray import tune

    keys = sorted({key for configuration in configurations for key in configuration})
    return {CONFIGURATION: tune.grid_search(list(range(len(configurations)))),
            SEED: tune.grid_search(list(seeds)),
            **{key: tune.sample_from(FromConfiguration(key, configurations)) for key in keys}}


def describe_metric(cfg) -> str:
    """The search metric as a summary states it: direction, and the operating point it is
    measured at (``val_overkill_at_escape`` compares models at one escape target)."""
    text = f"{cfg.best_metric} ({cfg.best_mode})"
    if cfg.best_metric == "val_overkill_at_escape":
        return f"{text} at val escape rate <= {cfg.metric_escape_target:.2%}"
    if cfg.best_metric in ("val_overkill_rate", "val_escape_rate"):
        return f"{text} at each trial's calibrated rule: {cfg.objective().describe()}"
    return text


def _json_value(value: Any) -> Any:
    """Tuples (dilation sets) as lists, numpy scalars as Python numbers: TrainConfig and
    JSON take those."""
    if isinstance(value, tuple):
        return list(value)
    return value.item() if hasattr(value, "item") else value


def _value_types(annotation: Any) -> tuple[type, ...]:
    """The types a training-config key takes: ``X | None`` takes X; ``Annotated`` rules dropped."""
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        return tuple(kind for arg in get_args(annotation) if arg is not type(None) for kind in _value_types(arg))
    if origin is Annotated:
        return _value_types(get_args(annotation)[0])
    return (origin or annotation,)


def _parse_parameter(key: Any, spec: Any, source: str) -> Parameter:
    where = f"{source}: parameters.{key}"
    if not isinstance(key, str):
        raise SearchSpaceError(f"{where}: keys must be training-config names")
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise SearchSpaceError(f"{where}: expected one of {{loguniform: [low, high]}}, {{uniform: [low, high]}}, "
                               f"{{choice: [values]}}, {{grid: [values]}}, got {spec!r}")
    distribution, args = next(iter(spec.items()))
    if key == "dilation_rates":
        return Parameter(key, distribution, _dilation_sets(distribution, args, where))
    if distribution in _LISTED:
        if not isinstance(args, list) or not args:
            raise SearchSpaceError(f"{where}: {distribution} needs a non-empty list of values, got {args!r}")
        return Parameter(key, distribution, tuple(tuple(v) if isinstance(v, list) else v for v in args))
    if (not isinstance(args, list) or len(args) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in args)):
        raise SearchSpaceError(f"{where}: {distribution} needs [low, high] numbers, got {args!r}")
    low, high = (float(v) for v in args)
    if not low < high or (distribution == "loguniform" and low <= 0):
        floor = "0 < " if distribution == "loguniform" else ""
        raise SearchSpaceError(f"{where}: {distribution} needs {floor}low < high, got [{low:g}, {high:g}]")
    return Parameter(key, distribution, (low, high))


def _dilation_sets(distribution: str, args: Any, where: str) -> tuple[tuple[int, ...], ...]:
    """Each DRF dilation set: positive ints, no repeats (a repeat only duplicates a branch)."""
    if distribution not in _LISTED:
        raise SearchSpaceError(f"{where}: dilation rates are searched as {{choice: [[1, 2, 4], ...]}} (or grid), "
                               f"not {distribution}")
    if not isinstance(args, list) or not args:
        raise SearchSpaceError(f"{where}: {distribution} needs a non-empty list of dilation sets, got {args!r}")
    sets = []
    for candidate in args:
        try:
            rates = validate_dilation_rates(candidate)
        except ValueError as exc:
            raise SearchSpaceError(f"{where}: invalid dilation set {candidate!r}: {exc}") from exc
        if len(set(rates)) != len(rates):
            raise SearchSpaceError(f"{where}: invalid dilation set {candidate!r}: rates repeat")
        sets.append(rates)
    if len(set(sets)) != len(sets):
        raise SearchSpaceError(f"{where}: the same dilation set is listed twice in {args!r}")
    return tuple(sets)


def _int(value: Any, name: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SearchSpaceError(f"{source}: {name} must be an integer, got {value!r}")
    return value


def _positive_int(value: Any, name: str, source: str) -> int:
    if _int(value, name, source) < 1:
        raise SearchSpaceError(f"{source}: {name} must be >= 1, got {value!r}")
    return value


def _reduction_factor(value: Any, source: str) -> int:
    if _int(value, "scheduler.reduction_factor", source) < 2:
        raise SearchSpaceError(f"{source}: scheduler.reduction_factor must be >= 2, got {value!r}")
    return value


def space_summary(space: SearchSpace, cfg) -> dict[str, Any]:
    """Flat, loggable description of the search (MLflow parent-run params); ``cfg``: the
    base training config (the ASHA grace and the metric's escape target depend on it)."""
    summary = {f"search.{p.key}": p.describe() for p in space.parameters.values()}
    summary.update({f"search.{k}": v for k, v in asdict(space).items() if k not in ("parameters", "training", "source")})
    summary.update({"search.grace_period": space.asha_grace_period(cfg.epochs), "search.metric": describe_metric(cfg),
                    "search.seeds": str(trial_seeds(cfg.seed, space.repeats))})
    if cfg.best_metric == "val_overkill_at_escape":
        summary["search.escape_target"] = cfg.metric_escape_target
    return summary
