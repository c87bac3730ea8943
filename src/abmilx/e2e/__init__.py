"""End-to-end (encoder + MIL) training with multi-scale random instance sampling."""

from abmilx.e2e.train import E2ESettings, predict, train

__all__ = ["E2ESettings", "predict", "train"]
