"""Registering weights trained elsewhere (``jaffnet import-weights``) as an MLflow model version.

The file is read without unpickling anything (``jaffnet.io.read_state_dict``: safetensors,
or ``torch.load(weights_only=True)``), renamed by ``jaffnet.authors_weights`` and logged and
registered through ``pipelines.registry`` like a trained model, with its provenance (origin,
file name, sha256) in the metadata and the version's tags. It carries no calibrated decision
rule: the thresholds are 0.5 and marked uncalibrated.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

from jaffnet.authors_weights import AUTHORS_CODE, load_authors_weights
from jaffnet.contract import CONTRACT_KEY, InputContract, contract_tags
from jaffnet.decision import RULE_KEY, DecisionRule
from jaffnet.digests import file_sha256
from jaffnet.io import WeightsError, read_state_dict
from pipelines import registry

ORIGINS = ("authors",)
DEFAULT_IMPORT_NAME = "jaffnet-authors"
IMPORT_EXPERIMENT = "jaffnet-imports"
PAPER_IMAGE_SIZE = 256
UNCALIBRATED_THRESHOLD = 0.5
NOTE = ("Imported weights, not trained or validated by this pipeline: no metrics, and decision thresholds "
        "0.5 that are NOT calibrated. Frames are normalised as the authors' code does (input contract "
        "normalization 'authors': image/max(image), then (x - 0.4669)/0.2437 on every channel); evaluate "
        "and calibrate the model on your data before serving it.")


@dataclass
class ImportedVersion:
    model_uri: str
    name: str
    version: str
    run_id: str
    sha256: str
    parameters: int


def read_weights(path: str | Path):
    """The file's state_dict; WeightsError (one short paragraph) when it cannot be used."""
    path = Path(path)
    try:
        return read_state_dict(path)
    except WeightsError as exc:
        if isinstance(exc.__cause__, pickle.UnpicklingError):  # torch's weights_only refusal
            lines = str(exc.__cause__).splitlines()
            detail = next((line.strip().rstrip(".") for line in lines if "GLOBAL" in line), "")
            raise WeightsError(
                f"{path} holds pickled Python objects besides tensors, which are never unpickled "
                f"(weights-only loading refused it{': ' + detail if detail else ''}); save the state_dict "
                "alone (torch.save(model.state_dict(), ...)) or as .safetensors") from None
        raise


def import_metadata(name: str, origin: str, path: Path, sha256: str, image_size: int, config: dict) -> dict:
    """What the registered model carries, in the keys trained models use (``input_contract``,
    ``decision_rule``, flat ``image_size`` / ``threshold``) plus its provenance."""
    contract = InputContract(image_size=image_size, mode="resize", normalization="authors")
    rule = DecisionRule(pixel_threshold=UNCALIBRATED_THRESHOLD, image_threshold=UNCALIBRATED_THRESHOLD,
                        calibrated=False)
    return {
        "model_name": name,
        "model_config": dict(config),
        "image_size": contract.image_size,
        CONTRACT_KEY: contract.to_dict(),
        RULE_KEY: rule.to_dict(),
        "threshold": rule.pixel_threshold,
        "metrics": {},
        "imported_from": origin,
        "imported_code": AUTHORS_CODE,
        "imported_file": path.name,
        "imported_sha256": sha256,
        "note": NOTE,
    }


def import_weights(path: str | Path, origin: str = "authors", name: str = DEFAULT_IMPORT_NAME,
                   image_size: int = PAPER_IMAGE_SIZE, experiment: str = IMPORT_EXPERIMENT) -> ImportedVersion:
    """Log and register ``path`` as a new version of ``name`` (no alias is moved) in its own
    MLflow run; call ``registry.configure_tracking`` first. Raises WeightsError (a ValueError)
    for a file that is unreadable, not weights-only or not the authors' model."""
    import mlflow

    if origin not in ORIGINS:
        raise ValueError(f"unknown origin {origin!r}; choose from {', '.join(ORIGINS)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    digest = file_sha256(path)
    model = load_authors_weights(read_weights(path))
    metadata = import_metadata(name, origin, path, digest, image_size, model.config)
    rule, contract = DecisionRule.from_dict(metadata[RULE_KEY]), InputContract.from_dict(metadata[CONTRACT_KEY])
    tags = {
        "imported_from": origin,
        "imported_file": path.name,
        "imported_sha256": digest,
        "threshold": f"{rule.pixel_threshold:.6f}",
        "image_threshold": f"{rule.image_threshold:.6f}",
        "min_defect_area_px": str(rule.min_defect_area_px),
        "calibrated": "false",
        **contract_tags(contract),
    }
    registry.set_experiment(experiment)
    with mlflow.start_run(run_name=f"import-{origin}-{path.stem}") as run:
        mlflow.set_tags(tags)
        mlflow.log_params({"origin": origin, "file": path.name, "sha256": digest, "image_size": image_size,
                           **{f"model_{key}": value for key, value in model.config.items()}})
        info = registry.log_model(model, metadata)
    version = registry.register(info.model_uri, name, tags=tags, aliases=())
    return ImportedVersion(model_uri=f"models:/{name}/{version.version}", name=name, version=str(version.version),
                           run_id=run.info.run_id, sha256=digest,
                           parameters=sum(p.numel() for p in model.parameters()))
