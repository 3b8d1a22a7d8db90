import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


@contextmanager
def temporary_tracking(directory):
    """MLflow pointed at a SQLite registry in ``directory``; the process-wide settings
    (and the environment variables MLflow exports) are restored afterwards."""
    import mlflow

    from pipelines import registry

    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        yield registry.configure_tracking(f"sqlite:///{directory / 'mlflow.db'}")
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture()
def tracking(tmp_path):
    with temporary_tracking(tmp_path) as uri:
        yield uri


@dataclass
class ApiKeys:
    """A keys file with one key per kind of client; ``tokens`` by name."""

    file: Path
    tokens: dict[str, str]

    def header(self, name: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"} if name else {}


KEY_KINDS = (("line-L1", "line", "L1"), ("line-L2", "line", "L2"), ("operator", "operator", None),
             ("admin", "admin", None), ("revoked", "operator", None))


def write_api_keys(directory: Path) -> ApiKeys:
    """Keys ``line-L1``, ``line-L2``, ``operator``, ``admin`` and ``revoked`` (an operator key, revoked)."""
    from serving.keys import add_key, key_id, new_keyset, revoke_key, write_keys_file

    keyset, tokens = new_keyset(), {}
    for name, role, line in KEY_KINDS:
        tokens[name], keyset = add_key(keyset, role, line, name)
    write_keys_file(directory / "keys", revoke_key(keyset, key_id(tokens["revoked"])))
    return ApiKeys(directory / "keys", tokens)


@pytest.fixture(scope="module")
def api_keys(tmp_path_factory):
    return write_api_keys(tmp_path_factory.mktemp("keys"))
