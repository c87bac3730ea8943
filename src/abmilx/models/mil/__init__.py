"""MIL aggregators; importing this package registers them."""

from . import abmil, abmilx, pooling, qamil, vitmil
from .base import MILOutput

__all__ = ["MILOutput", "abmil", "abmilx", "pooling", "qamil", "vitmil"]
