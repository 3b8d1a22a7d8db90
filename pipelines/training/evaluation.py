"""``jaffnet evaluate``: a registered or saved model's metrics on a dataset split.

Same path as the training loop's validation: the data pipeline's un-augmented dataset at
the model's training size, ``inference.predict_probabilities``, then
``scoring.score_predictions`` at each image's original size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaffnet.metrics import format_table
from pipelines import registry
from pipelines.training.inference import predict_probabilities
from pipelines.training.scoring import score_predictions


@dataclass
class Evaluation:
    model: str
    split: str
    count: int
    image_size: int
    rows: dict[str, dict[str, float]]  # per defect class and "overall"
    name: str | None = None
    version: str | None = None

    def table(self, title: str | None = None) -> str:
        return format_table(self.rows, title or f"{self.model} on {self.split} ({self.count} images)")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def model_image_size(metadata: dict[str, Any], source: str) -> int:
    size = metadata.get("image_size")
    if not isinstance(size, int) or size < 32 or size % 32:
        raise ValueError(f"{source} has no usable 'image_size' in its metadata (got {size!r}); "
                         "was it saved by `jaffnet train`?")
    return size


def evaluate(model_uri: str | Path, dataset_dir: str | Path, split: str = "test", *, batch_size: int = 8,
             tracking_uri: str | None = None) -> Evaluation:
    """Load ``model_uri`` (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/...`` or
    a local directory) and score it on ``split``."""
    from pipelines.data import build_dataset, iter_samples
    from pipelines.training.trainer import configure_data_context

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    registry.configure_tracking(tracking_uri)
    loaded = registry.load_model(model_uri)
    image_size = model_image_size(loaded.metadata, str(model_uri))
    configure_data_context()
    dataset = build_dataset(dataset_dir, split, image_size, augment=False)
    probabilities = predict_probabilities(loaded.model, dataset.iter_batches(batch_size=batch_size,
                                                                              batch_format="numpy"))
    scores = score_predictions(probabilities, iter_samples(dataset_dir, split), per_class=True)
    return Evaluation(model=str(model_uri), split=split, count=scores.count, image_size=image_size,
                      rows=scores.rows, name=loaded.name, version=loaded.version)


def all_background_baseline(dataset_dir: str | Path, split: str = "test") -> Evaluation:
    """The scores of predicting "no defect anywhere": what a model must beat to have learnt."""
    from pipelines.data import iter_samples

    # A 1x1 zero map per image; scoring resizes it to the image's size.
    blank = {str(s.id): np.zeros((1, 1), np.float32) for s in iter_samples(dataset_dir, split)}
    scores = score_predictions(blank, iter_samples(dataset_dir, split), per_class=True)
    return Evaluation(model="all-background", split=split, count=scores.count, image_size=0, rows=scores.rows)
