"""Two-stage MIL training on offline features, and prediction with attention."""

from abmilx.two_stage.train import TwoStageSettings, predict, train

__all__ = ["TwoStageSettings", "predict", "train"]
