"""End-to-end (encoder + MIL) training with multi-scale random instance sampling; prediction
is `abmilx.training.predict`."""

from abmilx.e2e.train import E2ESettings, E2ETask, train
from abmilx.training import predict

__all__ = ["E2ESettings", "E2ETask", "predict", "train"]
