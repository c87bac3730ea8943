"""Tissue segmentation of whole-slide thumbnails at a physical working resolution."""

__all__ = ["segment_slide"]


def __getattr__(name: str):
    """``segment_slide`` on first use: the tiling CLI imports this package's geometry only, and
    pays for nothing else at its per-slide start-up."""
    if name == "segment_slide":
        from abmilx.segmentation.segment import segment_slide

        return segment_slide
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
