"""One process's training-step throughput (``jaffnet bench model``'s training rows, ``jaffnet bench data``)."""

import pytest

import pipelines.training.loop
from pipelines.training.bench import bench_training, format_training
from pipelines.training.config import load_config


def test_bench_training_times_the_loops_own_step_with_the_configs_recipe(monkeypatch):
    cfg = load_config(None, ["width=0.125", "grad_clip_norm=1.0", "bce_pos_weight=3", "optimizer=sgd"])
    steps, real_step = [], pipelines.training.loop.train_step

    def recording_step(model, images, masks, loss_fn, optimizer, scaler, grad_clip_norm, autocast_dtype):
        steps.append((type(optimizer).__name__, float(loss_fn.bce_pos_weight), grad_clip_norm, tuple(images.shape)))
        return real_step(model, images, masks, loss_fn, optimizer, scaler, grad_clip_norm, autocast_dtype)

    monkeypatch.setattr(pipelines.training.loop, "train_step", recording_step)
    result = bench_training(cfg, image_size=32, batch_size=2, iters=1)
    assert result.images_per_s > 0 and result.step_ms > 0 and result.batch_size == 2
    assert "images/s" in format_training([result])
    assert steps and set(steps) == {("SGD", 3.0, 1.0, (2, 3, 32, 32))}  # warmup and timed steps alike
    with pytest.raises(ValueError, match=">= 2"):
        bench_training(cfg, image_size=32, batch_size=1, iters=1)
