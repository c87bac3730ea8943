"""Two-stage MIL training on offline features; prediction is `abmilx.kinds.predict`."""

from abmilx.kinds import predict
from abmilx.two_stage.train import TwoStageSettings, TwoStageTask, train

__all__ = ["TwoStageSettings", "TwoStageTask", "predict", "train"]
