"""MIL aggregators; importing this package registers them."""

from . import (
    abmil,
    abmilx,
    chief,
    clam,
    dsmil,
    dtfd,
    gigapath_slide,
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
    "chief",
    "clam",
    "dsmil",
    "dtfd",
    "gigapath_slide",
    "mamba2d",
    "pooling",
    "qamil",
    "rrtmil",
    "transmil",
    "vitmil",
    "wikg",
]
