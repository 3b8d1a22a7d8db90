"""Ray Train on a GPU: the real loop with DDP over NCCL and float16 mixed precision, on the
full-size model at the paper's 256x256. Skips where torch sees no CUDA GPU (CI has none);
run it on a GPU machine: ``pytest tests/pipelines/training/test_gpu_training.py``."""

import math
from pathlib import Path

import pytest
import torch

from pipelines.training.checkpointing import TRAINING_STATE_FILE

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU: NCCL DDP and float16 autocast only run there")

GPU_RUN = ["width=1.0", "image_size=256", "epochs=2", "batch_size=8", "num_workers=1", "use_gpu=true",
           "mixed_precision=true", "cpus_per_worker=1", "torch_threads=1", "num_overlays=1"]


def test_a_gpu_run_trains_the_full_model_with_nccl_and_mixed_precision(ray_session, tmp_path):
    from pipelines.training import load_config
    from pipelines.training.trainer import build_run_config, build_trainer
    from tests.datasets import make_tiny_dataset

    dataset = make_tiny_dataset(tmp_path / "data", count=40, size=256)
    cfg = load_config(None, [*GPU_RUN, f"storage_path={tmp_path / 'ray_results'}"])
    result = build_trainer(cfg, dataset, run_config=build_run_config(cfg, "gpu-run")).fit()

    assert result.error is None
    assert result.metrics["epoch"] == 1 and math.isfinite(result.metrics["train_loss"])
    with result.checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / TRAINING_STATE_FILE, weights_only=True)
    assert state["setup"] == {"device": "cuda", "ddp_backend": "nccl", "workers": 1, "mixed_precision": True}
    assert state["scaler"]["scale"] > 0  # the GradScaler was live (it saves nothing when disabled)
    print(f"GPU run: {[round(h['epoch_time_s'], 1) for h in state['history']]} s per epoch, "
          f"train_loss {[round(h['train_loss'], 4) for h in state['history']]}")
