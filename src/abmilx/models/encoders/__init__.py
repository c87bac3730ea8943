"""Patch encoders; importing this package registers them."""

from . import resnet, swin, vit

__all__ = ["resnet", "swin", "vit"]
