"""Patch encoders; importing this package registers them."""

from . import hub, resnet, swin, vit

__all__ = ["hub", "resnet", "swin", "vit"]
