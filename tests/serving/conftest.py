import os
from contextlib import contextmanager

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
