from jaffnet.encoders.resnet import ResNetEncoder

__all__ = ["ResNetEncoder"]
