"""Training JAFFNet with Ray Train DDP, tracked and registered in MLflow.

Public API (used by ``tuning`` and the CLI):

- ``load_config(path | None, overrides) -> TrainConfig``: validated config, ``--set`` style overrides
- ``train_loop_per_worker(loop_config)``: the plain-function Ray Train loop
- ``build_trainer(cfg, data, *, run_config) -> TorchTrainer`` and ``build_run_config`` (``data``: one dataset or several)
- ``MLflowEpochLogger``: Ray Train callback logging those metrics to an MLflow run
- ``publish_best(result, cfg, ...)``: best checkpoint -> logged, registered, maybe champion
- ``train(cfg, data, ...)``: all of the above in one tracked run

Scoring, calibration and evaluation live in ``pipelines.evaluation`` (training, serving and the
INT8 export all use them).
"""

import importlib

# Lazy exports: the CLI imports ``pipelines.training.commands`` for every ``jaffnet``
# invocation, and ``jaffnet --help`` should not pay for torch, Ray and MLflow.
_EXPORTS = {
    "SELECTABLE_METRICS": "config",
    "TrainConfig": "config",
    "load_config": "config",
    "train_loop_per_worker": "loop",
    "TrainingOutcome": "run",
    "train": "run",
    "MLflowEpochLogger": "tracking",
    "Publication": "tracking",
    "publish_best": "tracking",
    "build_datasets": "trainer",
    "build_run_config": "trainer",
    "build_trainer": "trainer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
