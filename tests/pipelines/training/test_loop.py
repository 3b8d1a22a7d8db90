"""The training loop's pieces that run without Ray (a single process: no DDP group)."""

import numpy as np
import pytest
import torch

from pipelines.data.dataset import Sample
from pipelines.training.config import load_config
from pipelines.training.factory import build_loss, build_model
from pipelines.training.loop import score_validation, validate


def frames(count: int, size: int = 40) -> list[Sample]:
    rng = np.random.default_rng(0)
    samples = []
    for index in range(count):
        mask = np.zeros((size, size), np.uint8)
        if index % 2:
            mask[10:16, 8:30] = 255
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        samples.append(Sample(f"frame-{index}", "scratch" if index % 2 else "none", image, mask, size, size))
    return samples


def test_validation_batches_its_own_size_and_scores_the_same():
    """``val_batch_size`` sets how many model inputs (four mirrored views a frame here) share a forward
    pass; unset, validation batches like training. The scores do not depend on it."""
    outcomes = {}
    for override in ([], ["val_batch_size=8"]):
        cfg = load_config(None, ["width=0.125", "image_size=32", "batch_size=2", "flip_views=4", "num_overlays=0",
                                 "min_defect_area_px=0", *override])
        torch.manual_seed(0)
        model, batches = build_model(cfg).eval(), []
        model.register_forward_pre_hook(lambda module, args: batches.append(len(args[0])))
        val_loss, scored, _ = validate(model, frames(5), cfg.input_contract(), build_loss(cfg), cfg,
                                       torch.device("cpu"), None)
        outcomes[cfg.validation_batch] = (batches, val_loss, score_validation(scored, cfg)[1])
    assert outcomes[2][0] == [2] * 10 and outcomes[8][0] == [8, 8, 4]  # 5 frames x 4 views
    (_, loss_2, metrics_2), (_, loss_8, metrics_8) = outcomes[2], outcomes[8]
    assert loss_8 == pytest.approx(loss_2, rel=1e-4)
    assert metrics_8["val_mae"] == pytest.approx(metrics_2["val_mae"], rel=1e-4)


def test_val_batch_size_is_checked():
    with pytest.raises(ValueError, match="'val_batch_size'"):
        load_config(None, ["val_batch_size=0"])
