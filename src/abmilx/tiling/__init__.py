"""Patch grids at exact µm/px scales, read from the slides into the patch store
(`abmilx.patches.store`; see docs/architecture.md)."""
