"""Model zoo: patch encoders and MIL aggregators, built by name (see docs/architecture.md)."""

from . import encoders, mil
from .mil.base import MILOutput, call_mil
from .registry import (
    create_encoder,
    create_mil,
    list_encoders,
    list_mils,
    register_encoder,
    register_mil,
)
from .utils import count_flops, count_parameters
from .weights import WeightsUnavailableError

__all__ = [
    "MILOutput",
    "WeightsUnavailableError",
    "call_mil",
    "count_flops",
    "count_parameters",
    "create_encoder",
    "create_mil",
    "encoders",
    "list_encoders",
    "list_mils",
    "mil",
    "register_encoder",
    "register_mil",
]
