"""The config's `segmentation` block as one typed object (defaults: the config schema)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from abmilx.settings import BlockSettings


@dataclass(frozen=True, kw_only=True)
class SegmentationSettings(BlockSettings):
    """How tissue is found on a slide's working view; each field is the schema key of the same
    name (its description says what it does)."""

    working_mpp: float
    saturation_threshold: int | str
    median_kernel: int
    closing_um: float
    min_tissue_area_um2: float
    min_hole_area_um2: float
    black_value_max: int
    black_ink_chroma_max: int
    gray_ink_saturation_max: int
    gray_ink_value_max: int
    pen_hue_ranges_deg: list[list[float]]
    pen_min_saturation: int
    pen_margin_um: float
    debris_value_max: int
    debris_max_area_um2: float
    trust_file_mpp: bool
    plausible_mpp: list[float]
    memory_budget_mb: float

    def __post_init__(self) -> None:
        if not self.working_mpp > 0:
            raise ValueError(f"working_mpp must be positive, got {self.working_mpp}")
        threshold = self.saturation_threshold
        if threshold != "otsu" and not (isinstance(threshold, int) and 0 <= threshold < 255):
            raise ValueError(
                f"saturation_threshold must be 'otsu' or an int in 0..254, got {threshold!r}"
            )
        low_high = self.plausible_mpp
        if len(low_high) != 2 or not 0 < low_high[0] < low_high[1]:
            raise ValueError(
                f"plausible_mpp must be [low, high] with 0 < low < high, got {low_high}"
            )

    def as_dict(self) -> dict[str, Any]:
        record = super().as_dict()
        record["pen_hue_ranges_deg"] = [list(r) for r in self.pen_hue_ranges_deg]
        record["plausible_mpp"] = list(self.plausible_mpp)
        return record
