"""The config's `tiling` block as one typed object (defaults: the config schema)."""

from __future__ import annotations

from dataclasses import dataclass

from abmilx.settings import BlockSettings
from abmilx.tiling.grid import INCLUSION_RULES


@dataclass(frozen=True, kw_only=True)
class TilingSettings(BlockSettings):
    """The patch grid of every scale and how patches are read and stored; each field is the
    schema key of the same name. ``scales`` maps a scale name to µm/px."""

    scales: dict[str, float]
    patch_size: int
    min_tissue_fraction: float
    inclusion: str
    jpeg_quality: int
    level_tolerance: float
    fast_read: bool
    passthrough: bool

    DATASET_KEYS = ("slides_per_job", "pack")  # pack: only rule pack_tiles reads it

    def __post_init__(self) -> None:
        scales = dict(self.scales)
        if not scales or any(not float(v) > 0 for v in scales.values()):
            raise ValueError(f"scales must map names to positive µm/px, got {scales}")
        if not 0.0 <= self.min_tissue_fraction <= 1.0:
            raise ValueError(
                f"min_tissue_fraction must be in [0, 1], got {self.min_tissue_fraction}"
            )
        if self.inclusion not in INCLUSION_RULES:
            raise ValueError(f"inclusion must be one of {INCLUSION_RULES}, got {self.inclusion!r}")
