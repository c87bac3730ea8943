"""MIL aggregators; importing this package registers them."""

from . import (
    abmil,
    abmilx,
    clam,
    dsmil,
    dtfd,
    mamba2d,
    pooling,
    qamil,
    rrtmil,
    transmil,
    vitmil,
    wikg,
)
from .base import MILOutput

__all__ = [
    "MILOutput",
    "abmil",
    "abmilx",
    "clam",
    "dsmil",
    "dtfd",
    "mamba2d",
    "pooling",
    "qamil",
    "rrtmil",
    "transmil",
    "vitmil",
    "wikg",
]
