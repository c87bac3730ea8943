"""Offline patch feature extraction (input of two-stage MIL training)."""

from abmilx.features.extract import extract, load_features

__all__ = ["extract", "load_features"]
