"""What one epoch's checkpoint holds, and how training resumes from it.

A checkpoint directory is a ``jaffnet.io.save_pretrained`` model (``config.json`` with the
training config, epoch, metrics, input contract and decision rule as metadata, ``model.safetensors``) plus
``training_state.pt`` (optimiser, LR scheduler and AMP scaler state, and the device, DDP backend
and precision it trained with, read back with ``weights_only=True``: nothing arbitrary is
unpickled) and ``overlays/`` PNGs. With a
weight average (``ema_decay``) the saved model is the average (what was validated and is
published) and ``training_state.pt`` also holds the weights as trained, to resume from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel

from jaffnet.contract import CONTRACT_KEY
from jaffnet.decision import RULE_KEY, DecisionRule
from jaffnet.io import load_pretrained, read_config, save_pretrained
from jaffnet.model import JAFFNet
from pipelines.evaluation.calibration import CALIBRATION_KEY, CalibrationRecord
from pipelines.training.config import TrainConfig

TRAINING_STATE_FILE = "training_state.pt"
OVERLAY_DIR = "overlays"


@dataclass
class TrainingState:
    """Where a run stands after a finished epoch."""

    epoch: int = -1  # last finished epoch; -1: none yet
    history: list[dict[str, float]] = field(default_factory=list)  # reported metrics, one dict per epoch

    @property
    def next_epoch(self) -> int:
        return self.epoch + 1


def model_metadata(train_config: dict[str, Any], epoch: int, metrics: dict[str, float],
                   rule: DecisionRule, calibration: CalibrationRecord | None = None) -> dict[str, Any]:
    """The metadata a saved model carries: the input contract and the decision rule travel
    with the weights, so evaluation and serving apply what validation measured."""
    contract = TrainConfig.from_dict(train_config).input_contract()
    return {
        "model_name": train_config["model_name"],
        "image_size": contract.image_size,  # also flat, for readers of older metadata (e.g. jaffnet export)
        CONTRACT_KEY: contract.to_dict(),
        RULE_KEY: rule.to_dict(),
        **({CALIBRATION_KEY: calibration.to_dict()} if calibration is not None else {}),
        "threshold": rule.pixel_threshold,
        "metrics": {k: float(v) for k, v in metrics.items() if k.startswith("val_")},
        "epoch": int(epoch),
        "train_config": train_config,
    }


def save_checkpoint(directory: str | Path, model: JAFFNet, train_config: dict[str, Any], optimizer, scheduler,
                    scaler, state: TrainingState, rule: DecisionRule, trained: JAFFNet | None = None,
                    setup: dict[str, Any] | None = None, calibration: CalibrationRecord | None = None) -> Path:
    """``model`` is what was validated (the average, with ``ema_decay``); ``trained`` the
    weights as trained when they differ from it; ``setup`` how the run trains (device, DDP
    backend, precision), kept for provenance."""
    directory = Path(directory)
    save_pretrained(model, directory, metadata=model_metadata(train_config, state.epoch, state.history[-1], rule,
                                                                  calibration))
    training_state = {
        "epoch": state.epoch,
        "history": state.history,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "setup": setup or {},
    }
    if trained is not None:
        training_state["trained_weights"] = trained.state_dict()
    torch.save(training_state, directory / TRAINING_STATE_FILE)
    return directory


def restore_checkpoint(directory: str | Path, model: JAFFNet, optimizer, scheduler, scaler,
                       average: AveragedModel | None = None) -> TrainingState:
    """Load weights (and the weight average) and optimiser/scheduler/scaler state in place;
    returns the run's progress."""
    directory = Path(directory)
    published = load_pretrained(directory).state_dict()
    saved = torch.load(directory / TRAINING_STATE_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(saved.get("trained_weights", published))
    if average is not None:  # continue the average from the saved one, not from the next step's weights
        average.module.load_state_dict(published)
        average.n_averaged.fill_(1)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    return TrainingState(epoch=int(saved["epoch"]), history=list(saved["history"]))


def read_checkpoint_metadata(directory: str | Path) -> dict[str, Any]:
    return read_config(directory)["metadata"]
