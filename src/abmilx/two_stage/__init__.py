"""Two-stage MIL training on offline features; prediction is `abmilx.training.predict`."""

from abmilx.training import predict
from abmilx.two_stage.train import TwoStageSettings, TwoStageTask, train

__all__ = ["TwoStageSettings", "TwoStageTask", "predict", "train"]
