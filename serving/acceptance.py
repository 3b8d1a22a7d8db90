"""Site acceptance test of a running endpoint: ``jaffnet evaluate --endpoint URL --data DATASET``.

Every frame of a split is posted at its own size, as the line would post it (the stored
lossless PNG), and what comes back is scored with the same tables as ``jaffnet evaluate
--model``: the saliency metrics on the returned probability maps, the image-level
metrics on the returned OK/NG decisions and image scores. For the same model version the
two must agree (to 1e-3 on every metric); a difference means the endpoint does not judge
frames the way evaluation scored them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaffnet.contract import InputContract
from jaffnet.decision import DecisionRule
from pipelines.data.codec import decode_mask
from pipelines.data.dataset import iter_encoded_batches
from pipelines.training.evaluation import Evaluation
from pipelines.training.scoring import EndpointVerdict, score_predictions
from serving.client import InspectionFailed, get_json, post_frame
from serving.postprocess import decode_probability


@dataclass
class PostedFrame:
    id: str
    defect_class: str
    data: bytes  # the frame as stored: a lossless PNG at its own size
    mask: np.ndarray


def _frames(dataset_dir: str | Path, split: str) -> list[PostedFrame]:
    return [PostedFrame(str(sample_id), str(batch["defect_class"][i]), batch["image"][i], decode_mask(batch["mask"][i]))
            for batch in iter_encoded_batches(dataset_dir, split) for i, sample_id in enumerate(batch["id"])]


def evaluate_endpoint(url: str, dataset_dir: str | Path, split: str = "test", *, concurrency: int = 4,
                      timeout: float = 120.0) -> Evaluation:
    """Score the endpoint at ``url`` on ``split``; raises ``ValueError`` naming the frames it refused."""
    if not 1 <= concurrency <= 64:
        raise ValueError(f"concurrency must be in [1, 64], got {concurrency}")
    try:
        card = get_json(url, "/v1/model", timeout=timeout)
    except (OSError, InspectionFailed) as exc:
        raise ValueError(f"cannot read the model card at {url}/v1/model: {exc}") from exc
    contract, rule = InputContract.from_dict(card["contract"]), DecisionRule.from_dict(card["rule"])
    frames = _frames(dataset_dir, split)
    # No more clients than the endpoint admits frames at once (the rest would wait out 503s).
    concurrency = min(concurrency, card.get("limits", {}).get("max_inputs_in_flight", concurrency))

    def post(frame: PostedFrame) -> dict | str:
        try:
            return post_frame(frame.data, url, probability=True, timeout=timeout)
        except (OSError, InspectionFailed) as exc:
            return str(exc)

    with ThreadPoolExecutor(concurrency) as pool:
        answers = dict(zip((f.id for f in frames), pool.map(post, frames)))
    failed = {frame_id: answer for frame_id, answer in answers.items() if isinstance(answer, str)}
    if failed:
        shown = "; ".join(f"{frame_id}: {error}" for frame_id, error in list(failed.items())[:5])
        raise ValueError(f"the endpoint refused {len(failed)} of {len(frames)} frames ({shown})")
    probabilities = {frame_id: decode_probability(answer["probability_map"])
                     for frame_id, answer in answers.items()}
    verdicts = {frame_id: EndpointVerdict(answer["decision"], float(answer["image_score"]))
                for frame_id, answer in answers.items()}
    scores = score_predictions(probabilities, frames, rule=rule, verdicts=verdicts, per_class=True)
    return Evaluation.from_scores(scores, contract, url, split, card.get("name"), card.get("version"))
