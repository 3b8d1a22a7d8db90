"""JAFFNet for saliency detection of surface defects."""

__all__ = ["JAFFNet"]


def __getattr__(name: str):
    # Lazy: Ray Data workers import ``jaffnet.preprocess`` for every fresh worker process
    # and must not pay the ~1 s it takes to import torch.
    if name == "JAFFNet":
        from jaffnet.model import JAFFNet

        return JAFFNet
    raise AttributeError(f"module 'jaffnet' has no attribute {name!r}")
