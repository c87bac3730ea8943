"""Tissue segmentation of whole-slide thumbnails at a physical working resolution."""
