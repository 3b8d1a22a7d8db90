"""Data for JAFFNet: the synthetic default dataset, ingestion of the original layouts
into Parquet with Ray Data, and the paired-augmentation training input."""

from pipelines.data.augment import AugmentConfig
from pipelines.data.dataset import Sample, build_dataset, iter_samples, manifest_hash, read_manifest, read_split
from pipelines.data.ingestion import IngestError, IngestResult, ingest
from pipelines.data.layouts import FORMATS, SourceError
from pipelines.data.synth import synthesize

__all__ = [
    "FORMATS",
    "AugmentConfig",
    "IngestError",
    "IngestResult",
    "Sample",
    "SourceError",
    "build_dataset",
    "ingest",
    "iter_samples",
    "manifest_hash",
    "read_manifest",
    "read_split",
    "synthesize",
]
