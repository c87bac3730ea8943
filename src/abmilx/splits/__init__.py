"""Patient-level train/val/test splits (stage `splits`)."""

from abmilx.splits.core import (
    LeakageError,
    check_no_leakage,
    make_splits,
    survival_bin_edges,
    survival_labels,
)
from abmilx.splits.files import make_split_file, read_qc_status

__all__ = [
    "LeakageError",
    "check_no_leakage",
    "make_split_file",
    "make_splits",
    "read_qc_status",
    "survival_bin_edges",
    "survival_labels",
]
