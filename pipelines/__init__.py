"""Ray pipelines: data ingestion/augmentation, distributed training, the model registry."""
