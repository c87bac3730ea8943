"""Patch encoders; importing this package registers them."""

from . import resnet

__all__ = ["resnet"]
