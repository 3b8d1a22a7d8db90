"""A tiny, real, ingested dataset in seconds, for the tests of every package."""

from __future__ import annotations

from pathlib import Path

from pipelines.data.ingestion import ingest
from pipelines.data.synth import synthesize


def make_tiny_dataset(tmp_dir: str | Path, count: int = 24, size: int = 64, seed: int = 0) -> Path:
    """Synthesize ``count`` frames and ingest them (folder format) into ``tmp_dir/dataset``.

    Train, val and test are all non-empty for ``count >= 8``. Uses Ray: pass the
    ``ray_session`` fixture in the calling test.
    """
    if count < 8:
        raise ValueError(f"count must be >= 8 so that every split gets samples, got {count}")
    tmp_dir = Path(tmp_dir)
    synthesize(tmp_dir / "synth", count=count, size=size, seed=seed, overwrite=True)
    return ingest(tmp_dir / "synth", tmp_dir / "dataset", "folder", seed=seed,
                  val_fraction=0.2, test_fraction=0.2, overwrite=True).dataset_dir
