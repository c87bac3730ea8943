"""Self-supervised pretraining of a patch encoder: the demo's stand-in for pretrained weights.

ImageNet and foundation-model weights cannot be downloaded here, so ``pretrain`` trains a
registered encoder (SimCLR) on the patches of a separate, unlabelled generated cohort and
writes a local checkpoint that feature sets and E2E runs load like any other (``weights:
pretrain:<name>``), with a record of what it was trained on beside it.
"""

from abmilx.pretrain.simclr import nt_xent, pretrain, ssl_view

__all__ = ["nt_xent", "pretrain", "ssl_view"]
