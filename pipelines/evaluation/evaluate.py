"""``jaffnet evaluate``: a registered or saved model's metrics on a dataset split.

The path is the one training validation and the Serve endpoint take: every frame at its
own size through the model's input contract (``jaffnet.frames.predict_frames``), the
saliency metrics on the frame-size probability maps, and the image-level OK/NG metrics
at the operating point stored with the model (``jaffnet.decision``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jaffnet.contract import InputContract
from jaffnet.decision import DecisionRule
from jaffnet.metrics import IMAGE_COLUMNS, format_table
from pipelines.evaluation.scoring import SplitScores, score_predictions


FRAME_COLUMNS = ("id", "defect_class", "label", "image_score", "decision", "largest_region_px", "defect_area_px")


@dataclass
class Evaluation:
    model: str
    split: str
    count: int
    contract: dict[str, Any] | None  # None: not a model (the all-background baseline)
    rule: dict[str, Any]
    rows: dict[str, dict[str, float]]  # saliency metrics per defect class and "overall"
    image_rows: dict[str, dict[str, float]]  # image-level OK/NG metrics, same keys
    name: str | None = None
    version: str | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)  # one row per frame (FRAME_COLUMNS)

    @classmethod
    def from_scores(cls, scores: SplitScores, contract: InputContract | None, model: str, split: str,
                    name: str | None = None, version: str | None = None) -> Evaluation:
        frames = [{"id": frame_id, "defect_class": r.defect_class, "label": "NG" if r.defective else "OK",
                   "image_score": r.image_score, "decision": r.decision, "largest_region_px": r.largest_region_px,
                   "defect_area_px": r.defect_area_px} for frame_id, r in sorted(scores.frames.items())]
        return cls(model=model, split=split, count=scores.count, contract=contract.to_dict() if contract else None,
                   rule=scores.rule.to_dict(), rows=scores.rows, image_rows=scores.image_rows,
                   name=name, version=version, frames=frames)

    def table(self, title: str | None = None) -> str:
        rule = DecisionRule.from_dict(self.rule)
        how = f", {self.contract['mode']}: {InputContract.from_dict(self.contract).describe()}" if self.contract else ""
        operating_point = (f"image-level OK/NG: NG when image_score >= {rule.image_threshold:.4f}"
                           + (f" and a region >= {rule.min_defect_area_px} px" if rule.min_defect_area_px else "")
                           + f" (pixel threshold {rule.pixel_threshold:.4f}"
                           + ("" if rule.calibrated else "; NOT calibrated: a model saved before image-level rules")
                           + ")")
        lines = [format_table(self.rows, title or f"{self.model} on {self.split} ({self.count} images{how})"), "",
                 format_table(self.image_rows, operating_point, columns=IMAGE_COLUMNS)]
        ranked_against_good = [name for name, row in self.image_rows.items()
                               if "image_auroc" in row and "overkill_rate" not in row]
        if ranked_against_good:
            overall = self.image_rows["overall"]
            lines.append(f"AUROC of {', '.join(ranked_against_good)} (no good frames of their own): each class's "
                         f"frames ranked against the split's {int(overall['overkill'] + overall['true_ok'])} good frames")
        return "\n".join(lines)

    def metrics(self) -> dict[str, dict[str, float]]:
        """Saliency and image-level metrics merged per row."""
        return {name: {**self.rows[name], **self.image_rows.get(name, {})} for name in self.rows}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def predict_split(model, contract: InputContract, dataset_dir: str | Path, split: str, *,
                  batch_size: int = 8) -> tuple[list[Any], dict[str, np.ndarray]]:
    """A split's samples and each frame's probability map at its own size, through the
    model's input contract (the one frame -> probability path)."""
    from jaffnet.frames import predict_frames
    from jaffnet.inference import build_predictor
    from pipelines.data.dataset import iter_samples

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    predictor = build_predictor(model, "eager")
    samples = list(iter_samples(dataset_dir, split))
    probabilities = {str(sample.id): probability
                     for sample, probability in predict_frames(samples, contract, predictor, batch_size=batch_size)}
    return samples, probabilities


def evaluate(model_uri: str | Path, dataset_dir: str | Path, split: str = "test", *, batch_size: int = 8) -> Evaluation:
    """Load ``model_uri`` (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/...`` or
    a local directory) and score it on ``split`` with its own contract and decision rule."""
    from pipelines import registry

    loaded = registry.load_model(model_uri)
    contract, rule = loaded.contract, loaded.rule
    samples, probabilities = predict_split(loaded.model, contract, dataset_dir, split, batch_size=batch_size)
    scores = score_predictions(probabilities, samples, rule=rule, per_class=True)
    return Evaluation.from_scores(scores, contract, str(model_uri), split, loaded.name, loaded.version)


def all_background_baseline(dataset_dir: str | Path, split: str = "test") -> Evaluation:
    """The scores of predicting "no defect anywhere": what a model must beat to have learnt."""
    from pipelines.data.dataset import iter_samples

    samples = list(iter_samples(dataset_dir, split))
    blank = {str(s.id): np.zeros(s.mask.shape, np.float32) for s in samples}
    rule = DecisionRule(pixel_threshold=0.5, image_threshold=0.5)
    scores = score_predictions(blank, samples, rule=rule, per_class=True)
    return Evaluation.from_scores(scores, None, "all-background", split)
