"""One process's training-step throughput (``jaffnet bench model``'s training rows, ``jaffnet bench data``)."""

import pytest

from pipelines.training.bench import bench_training, format_training


def test_bench_training_times_full_steps():
    result = bench_training({"width": 0.125}, image_size=32, batch_size=2, iters=1)
    assert result.images_per_s > 0 and result.step_ms > 0 and result.batch_size == 2
    assert "images/s" in format_training([result])
    with pytest.raises(ValueError, match=">= 2"):
        bench_training({"width": 0.125}, image_size=32, batch_size=1, iters=1)
