"""Tissue segmentation of whole-slide thumbnails at a physical working resolution."""

from abmilx.segmentation.segment import segment_slide

__all__ = ["segment_slide"]
