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
from pipelines.codec import decode_mask
from pipelines.data.dataset import iter_encoded_batches
from pipelines.evaluation.evaluate import Evaluation
from pipelines.evaluation.scoring import EndpointVerdict, score_predictions
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
                      timeout: float = 120.0, key: str | None = None) -> Evaluation:
    """Score the endpoint at ``url`` on ``split``; raises ``ValueError`` naming the frames it refused.
    With keys the service needs an ``admin`` key here: it reads the model card and posts frames."""
    if not 1 <= concurrency <= 64:
        raise ValueError(f"concurrency must be in [1, 64], got {concurrency}")
    try:
        card = get_json(url, "/v1/model", timeout=timeout, key=key)
    except (OSError, InspectionFailed) as exc:
        raise ValueError(f"cannot read the model card at {url}/v1/model: {exc}") from exc
    contract, rule = InputContract.from_dict(card["contract"]), DecisionRule.from_dict(card["rule"])
    frames = _frames(dataset_dir, split)
    # No more clients than the endpoint admits frames at once (the rest would wait out 503s).
    concurrency = min(concurrency, card.get("limits", {}).get("max_inputs_in_flight", concurrency))

    def post(frame: PostedFrame) -> dict | str:
        try:
            return post_frame(frame.data, url, probability=True, timeout=timeout, key=key)
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
    verdicts = {frame_id: EndpointVerdict(answer["decision"], float(answer["image_score"]),
                                          int(answer["largest_region_px"]), int(answer["defect_area_px"]))
                for frame_id, answer in answers.items()}
    scores = score_predictions(probabilities, frames, rule=rule, verdicts=verdicts, per_class=True)
    return Evaluation.from_scores(scores, contract, url, split, card.get("name"), card.get("version"))


# Evaluation and the endpoint batch frames differently, and oneDNN picks kernels by batch size
# and CPU: equal float32 maps are equal only to within rounding (measured ~1e-6 on
# probabilities). A decision is only comparable for a frame whose score lies farther than
# this from the image threshold; nearer frames are reported, never hidden or asserted.
SCORE_TOLERANCE = 1e-4


@dataclass
class Parity:
    """How a live endpoint's verdicts compare with ``jaffnet evaluate``'s, frame by frame."""

    compared: int  # frames whose decision is comparable (score farther than the tolerance from the cut)
    max_score_difference: float
    score_mismatches: list[str]  # frames whose image scores differ by more than the tolerance
    disagreements: list[str]  # comparable frames judged differently: a real parity failure
    near_threshold: list[str]  # frames within the tolerance of the image threshold (either decision is honest)
    tolerance: float = SCORE_TOLERANCE

    @property
    def holds(self) -> bool:
        return not self.score_mismatches and not self.disagreements

    def describe(self) -> str:
        text = (f"parity: {self.compared} decisions compared, {len(self.disagreements)} differ; image scores within "
                f"{self.max_score_difference:.2e} (tolerance {self.tolerance:g})")
        if self.near_threshold:
            text += (f"; {len(self.near_threshold)} frame(s) within the tolerance of the image threshold, not "
                     f"compared: {', '.join(self.near_threshold[:10])}")
        return text


def compare_verdicts(offline: Evaluation, online: Evaluation, tolerance: float = SCORE_TOLERANCE) -> Parity:
    """Frame-by-frame parity of two evaluations of the same split at the same rule."""
    if offline.rule != online.rule:
        raise ValueError(f"the evaluations used different rules: {offline.rule} vs {online.rule}")
    theirs = {row["id"]: row for row in online.frames}
    if set(theirs) != {row["id"] for row in offline.frames}:
        raise ValueError("the evaluations scored different frames")
    cut = float(offline.rule["image_threshold"])
    compared, largest = 0, 0.0
    mismatches, disagreements, near = [], [], []
    for row in offline.frames:
        other = theirs[row["id"]]
        difference = abs(row["image_score"] - other["image_score"])
        largest = max(largest, difference)
        if difference > tolerance:
            mismatches.append(row["id"])
        if abs(row["image_score"] - cut) <= tolerance or abs(other["image_score"] - cut) <= tolerance:
            near.append(row["id"])
            continue
        compared += 1
        if row["decision"] != other["decision"]:
            disagreements.append(row["id"])
    return Parity(compared, largest, mismatches, disagreements, near, tolerance)
