"""Typed settings of a config block (segmentation, tiling): one frozen object that passes through
every layer instead of the block's keywords spelled out again in each.

The dataclasses declare no defaults: the config schema is their one source. A command gets the
whole block from its rule (defaults already filled), so `from_settings` only checks that every
key is known and present, naming the first offenders; it does not load the schema, and this module
imports nothing of the package: the per-slide commands start fast, and their code digests do not
take in the config module and, through it, the model zoo.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Self


class SettingsError(ValueError):
    """A settings mapping names an unknown key or lacks one; the message names them."""


@dataclass(frozen=True, kw_only=True)
class BlockSettings:
    """Base of a config block's settings: a subclass declares the block's keys as fields."""

    # Keys of the block that only the dataset's jobs read (how many slides a job takes, how
    # tiles are joined), never one slide's processing: dropped by from_settings, and left out of
    # what a slide's record is fingerprinted with, so changing them redoes no slide.
    DATASET_KEYS: ClassVar[tuple[str, ...]] = ("slides_per_job",)

    @classmethod
    def names(cls) -> list[str]:
        return [field.name for field in fields(cls)]

    @classmethod
    def _check_keys(cls, settings: Mapping[str, Any], what: str, complete: bool) -> None:
        allowed = cls.names()
        unknown = sorted(set(settings) - set(allowed))
        if unknown:
            raise SettingsError(f"{what}: unknown settings {unknown}; allowed: {sorted(allowed)}")
        missing = sorted(set(allowed) - set(settings))
        if complete and missing:
            raise SettingsError(
                f"{what}: missing settings {missing} (the config schema has their defaults)"
            )

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], what: str = "settings") -> Self:
        """Every key of the block (a rule's `--settings`, the config block), none unknown."""
        per_slide = {k: v for k, v in settings.items() if k not in cls.DATASET_KEYS}
        cls._check_keys(per_slide, what, complete=True)
        return cls(**copy.deepcopy(per_slide))

    @classmethod
    def known(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of ``settings`` that are fields here (a record of another version may
        hold keys this code no longer knows)."""
        names = set(cls.names())
        return {key: value for key, value in settings.items() if key in names}

    def updated(self, overrides: Mapping[str, Any], what: str = "overrides") -> Self:
        """A copy with ``overrides`` (a subset of the block's keys) replacing these values."""
        self._check_keys(overrides, what, complete=False)
        return replace(self, **copy.deepcopy(dict(overrides)))

    def as_dict(self) -> dict[str, Any]:
        """The block as the config spells it (JSON values)."""
        return asdict(self)
