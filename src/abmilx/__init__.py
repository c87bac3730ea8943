"""ABMILX reproduction workflow: slides -> patches -> MIL / E2E training -> paper tables."""

__version__ = "0.1.0"
