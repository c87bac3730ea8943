"""End-to-end (encoder + MIL) training from the patch store: multi-scale random instance
sampling (`e2e`) and the earlier C2C (`c2c`) and FT (`ft`) methods; prediction is
`abmilx.training.predict`."""

from abmilx.e2e.train import PATCH_KINDS, E2ESettings, E2ETask, train
from abmilx.training import predict

__all__ = ["PATCH_KINDS", "E2ESettings", "E2ETask", "predict", "train"]
