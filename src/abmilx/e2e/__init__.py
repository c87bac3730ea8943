"""End-to-end (encoder + MIL) training from the patch store: multi-scale random instance
sampling (`e2e`) and the earlier C2C (`c2c`) and FT (`ft`) methods; prediction is
`abmilx.kinds.predict`."""

from abmilx.e2e.patch_kinds import PATCH_KINDS, train
from abmilx.e2e.train import E2ESettings, E2ETask
from abmilx.kinds import predict

__all__ = ["PATCH_KINDS", "E2ESettings", "E2ETask", "predict", "train"]
