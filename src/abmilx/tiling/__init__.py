"""Patch grids at exact µm/px scales and the LMDB patch store (see docs/architecture.md)."""

from abmilx.tiling.store import PatchStore, PatchStoreWriter, pack_stores

__all__ = ["PatchStore", "PatchStoreWriter", "pack_stores"]
