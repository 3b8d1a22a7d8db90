"""MLflow tracking and model registry for JAFFNet models.

A registered version is an MLflow pyfunc "model from code" whose ``jaffnet`` artifact
holds ``config.json`` + ``model.safetensors``; loading rebuilds the model from those and
never unpickles anything. Registry aliases (``candidate``, ``champion``) replace the
deprecated stages.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaffnet.contract import InputContract, contract_from_metadata
from jaffnet.decision import DecisionRule, rule_from_metadata
from jaffnet.io import CONFIG_FILE, load_pretrained, read_config, save_pretrained
from jaffnet.model import JAFFNet
from pipelines import storage

DEFAULT_MODEL_NAME = "jaffnet"
CANDIDATE_ALIAS = "candidate"
CHAMPION_ALIAS = "champion"
_PYFUNC_CODE = Path(__file__).with_name("mlflow_pyfunc.py")
_ARTIFACT_KEY = "jaffnet"


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite database in the working directory
    (the registry works with no server; artifacts go to ./mlruns)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


_URI_PASSWORD = re.compile(r"(?P<prefix>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]+):[^@\s]+@")


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` masked: tracking
    and registry URIs (e.g. ``postgresql://mlflow:secret@db/mlflow``) end up in messages."""
    return _URI_PASSWORD.sub(r"\g<prefix>:***@", str(text))


def configure_tracking(tracking_uri: str | None = None) -> str:
    import mlflow

    # A model's artifacts are two small files: a progress bar per load only clutters job logs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def set_experiment(name: str, artifact_location: str = ""):
    """``mlflow.set_experiment(name)``; a new experiment gets ``artifact_location`` (e.g.
    ``s3://bucket/mlflow``) as its artifact root. An experiment keeps the root it was
    created with, so asking for another one is an error, not a silent write elsewhere."""
    import mlflow

    if artifact_location:
        wanted = storage.resolve(artifact_location)
        existing = mlflow.get_experiment_by_name(name)
        if existing is None:
            mlflow.create_experiment(name, artifact_location=wanted)
        elif existing.artifact_location.rstrip("/") != wanted:
            raise ValueError(f"MLflow experiment {name!r} keeps its artifacts in {existing.artifact_location}, "
                             f"not {wanted}; pick another experiment (--set experiment=NAME) or drop "
                             "artifact_location")
    return mlflow.set_experiment(name)


@dataclass
class LoadedModel:
    model: JAFFNet
    metadata: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    source: str = ""

    @property
    def contract(self) -> InputContract:
        """The input contract the model was validated with (legacy models: resize)."""
        return contract_from_metadata(self.metadata, self.source or "the model")

    @property
    def rule(self) -> DecisionRule:
        """The image-level decision rule calibrated with the model."""
        return rule_from_metadata(self.metadata, self.source or "the model")

    def export_metadata(self) -> dict[str, Any]:
        """What an exported file set carries: the model's scalar metadata and where it came from."""
        scalars = {key: value for key, value in self.metadata.items() if isinstance(value, (str, int, float, bool))}
        return {**scalars, "source": self.source, "name": self.name, "version": self.version}


def log_model(model: JAFFNet, metadata: dict[str, Any], name: str = "model"):
    """Log the model into the active MLflow run; returns MLflow's ``ModelInfo``."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp, _without_signature_warning():
        save_pretrained(model, Path(tmp) / _ARTIFACT_KEY, metadata=metadata)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(_PYFUNC_CODE),
            artifacts={_ARTIFACT_KEY: str(Path(tmp) / _ARTIFACT_KEY)},
            pip_requirements=["jaffnet", "torch", "safetensors"],
        )


class _SignatureWarningFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to infer model signature")


@contextmanager
def _without_signature_warning():
    """MLflow warns on every log that an ndarray type hint gives it no signature. The input
    contract stored with the weights (``jaffnet.contract``) is the model's signature, and a
    TensorSpec one makes MLflow validate and convert the input itself."""
    logger, log_filter = logging.getLogger("mlflow.pyfunc"), _SignatureWarningFilter()
    logger.addFilter(log_filter)
    try:
        yield
    finally:
        logger.removeFilter(log_filter)


def register(model_uri: str, name: str = DEFAULT_MODEL_NAME, tags: dict[str, str] | None = None,
             aliases: tuple[str, ...] = (CANDIDATE_ALIAS,)):
    """Register ``model_uri`` as a new version of ``name`` and point ``aliases`` at it."""
    import mlflow
    from mlflow import MlflowClient

    version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in (tags or {}).items()})
    client = MlflowClient()
    for alias in aliases:
        client.set_registered_model_alias(name, alias, version.version)
    return version


def _find_saved_dir(root: Path) -> Path:
    """The saved-model directory inside a local path or a downloaded MLflow model."""
    for candidate in (root, root / "artifacts" / _ARTIFACT_KEY, root / _ARTIFACT_KEY):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise FileNotFoundError(f"{root} holds no JAFFNet model ({CONFIG_FILE} not found)")


def is_local_path(uri: str) -> bool:
    """True for a saved-model directory, False for ``models:/``, ``runs:/`` and ``scheme://`` URIs."""
    return "://" not in uri and not uri.startswith(("models:/", "runs:/"))


def resolve_model_version(uri: str):
    """The registry's ``ModelVersion`` behind ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.

    Raises LookupError naming the URI and the registry when it does not exist.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not uri.startswith("models:/"):
        raise ValueError(f"{uri!r} is not a models:/ URI")
    spec = uri[len("models:/"):]
    client = MlflowClient()
    try:
        if "@" in spec:
            name, alias = spec.split("@", 1)
            return client.get_model_version_by_alias(name, alias)
        name, number = spec.rsplit("/", 1)
        return client.get_model_version(name, number)
    except (MlflowException, ValueError) as exc:
        raise LookupError(redact(f"cannot resolve {uri} in the registry at {mlflow.get_registry_uri()}: {exc}")) from exc


def load_model(uri: str | Path, map_location: str = "cpu") -> LoadedModel:
    """Load from ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/...`` or a local path."""
    uri = str(uri)
    if is_local_path(uri):
        saved = _find_saved_dir(Path(uri))
        return LoadedModel(load_pretrained(saved, map_location), read_config(saved)["metadata"], source=uri)

    import mlflow
    from mlflow.exceptions import MlflowException

    name = version = run_id = None
    if uri.startswith("models:/"):
        mv = resolve_model_version(uri)
        name, version, run_id = mv.name, str(mv.version), mv.run_id
    elif uri.startswith("runs:/"):
        run_id = uri[len("runs:/"):].strip("/").split("/", 1)[0] or None
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except MlflowException as exc:
        raise LookupError(redact(f"cannot download {uri}: {exc}")) from exc
    saved = _find_saved_dir(local)
    return LoadedModel(load_pretrained(saved, map_location), read_config(saved)["metadata"],
                       name=name, version=version, run_id=run_id, source=uri)


# Version tags the promotion rule reads.
MANIFEST_TAG = "dataset_manifest"
SELECTION_METRIC_TAG = "selection_metric"
ESCAPE_TAG = "val_escape_rate"
AT_ESCAPE_TAG = "val_overkill_at_escape"  # overkill at the lowest-overkill cut with val escape <= the target tag
AT_ESCAPE_TARGET_TAG = "overkill_at_escape_target"


@dataclass
class PromotionDecision:
    promote: bool
    reason: str


def compare_with_champion(candidate_tags: dict[str, str], champion_tags: dict[str, str] | None, metric: str,
                          lower_is_better: bool, force: bool = False) -> PromotionDecision:
    """Whether a candidate (by its version tags) should take the ``champion`` alias.

    Scores are only comparable on the same validation data, so a champion trained on a
    different dataset manifest is never replaced implicitly. A candidate that rejects more
    good parts at the same escape target (``val_overkill_at_escape`` at one
    ``overkill_at_escape_target``: the models compared, not each at its own threshold) never
    replaces it whatever its metric; versions without those tags are compared by their
    validation escape rates at their own rules (``force`` overrides all of it).
    """
    if force:
        return PromotionDecision(True, "promotion forced")
    if champion_tags is None:
        return PromotionDecision(True, "no champion yet")
    if champion_tags.get(MANIFEST_TAG) != candidate_tags.get(MANIFEST_TAG):
        return PromotionDecision(False, "champion was validated on other data (dataset manifest differs); "
                                        "use --promote to replace it")
    try:
        new, old = float(candidate_tags[metric]), float(champion_tags[metric])
    except (KeyError, ValueError):
        return PromotionDecision(False, f"champion has no comparable {metric!r} tag; use --promote to replace it")
    target = candidate_tags.get(AT_ESCAPE_TARGET_TAG)
    if target is not None and target == champion_tags.get(AT_ESCAPE_TARGET_TAG) \
            and AT_ESCAPE_TAG in candidate_tags and AT_ESCAPE_TAG in champion_tags:
        new_overkill, old_overkill = float(candidate_tags[AT_ESCAPE_TAG]), float(champion_tags[AT_ESCAPE_TAG])
        if new_overkill > old_overkill:
            return PromotionDecision(False, f"at val escape <= {float(target):.2%} its overkill {new_overkill:.4f} is "
                                            f"worse than champion's {old_overkill:.4f}; use --promote to replace it "
                                            "anyway")
    elif ESCAPE_TAG in champion_tags and ESCAPE_TAG in candidate_tags:
        new_escape, old_escape = float(candidate_tags[ESCAPE_TAG]), float(champion_tags[ESCAPE_TAG])
        if new_escape > old_escape:
            return PromotionDecision(False, f"escape rate {new_escape:.4f} is worse than champion's {old_escape:.4f}; "
                                            "use --promote to replace it anyway")
    better = new < old if lower_is_better else new > old
    relation = "beats" if better else "does not beat"
    return PromotionDecision(better, f"{metric} {new:.4f} {relation} champion's {old:.4f}")


def promote_if_better(name: str, version: str, metric: str, lower_is_better: bool,
                      force: bool = False) -> PromotionDecision:
    """Move ``champion`` to ``version`` when it beats the current champion (see above)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    candidate = client.get_model_version(name, version)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        champion = None
    if champion is not None and str(champion.version) == str(version):
        return PromotionDecision(True, "already champion")
    decision = compare_with_champion(dict(candidate.tags), dict(champion.tags) if champion else None, metric,
                                     lower_is_better, force)
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    return decision


# ----------------------------------------------------------------------------- published INT8 file sets

# Where `jaffnet export --format int8` publishes a file set that passed its gate, in the model's run:
# the set (``jaffnet.inference.int8_files``) and the gate report naming it (``extra.file_set``).
INT8_ARTIFACT_PATH = "int8"
INT8_REPORT_FILE = "gate_report.json"


def download_int8(loaded: LoadedModel, destination: str | Path | None = None) -> Path:
    """The INT8 file set published to ``loaded``'s run (``int8/``), downloaded: what serving's
    ``backend: int8`` runs (the backend then checks it against the weights). Raises
    LookupError when the run has no export that passed its gate."""
    import json

    import mlflow
    from mlflow.exceptions import MlflowException

    hint = f"run `jaffnet export --model {loaded.source} --format int8 --out DIR` first"
    run_id = loaded.run_id
    if run_id is None:
        raise LookupError(f"{loaded.source} is not in an MLflow run, so it has no logged INT8 export; {hint}, "
                          "or set backend_options.quantized_path to its file set")
    destination = Path(destination or tempfile.mkdtemp(prefix="jaffnet-int8-"))
    try:
        local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=INT8_ARTIFACT_PATH,
                                                         dst_path=str(destination)))
    except (MlflowException, OSError) as exc:
        raise LookupError(f"{loaded.source} (run {run_id}) has no INT8 export: {hint} ({exc})") from exc
    report_file = local / INT8_REPORT_FILE
    if not report_file.is_file():
        raise LookupError(f"{loaded.source} (run {run_id}) has no INT8 export ({INT8_ARTIFACT_PATH}/"
                          f"{INT8_REPORT_FILE} missing): {hint}")
    report = json.loads(report_file.read_text())
    file_set = report.get("extra", {}).get("file_set")
    if not report.get("passed") or not file_set or not (local / file_set).exists():
        raise LookupError(f"the INT8 export in run {run_id} did not pass its accuracy gate or lacks its "
                          f"file set: {hint}")
    return local / file_set
