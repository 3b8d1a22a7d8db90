"""JAFFNet for saliency detection of surface defects."""

from jaffnet.model import JAFFNet

__all__ = ["JAFFNet"]
