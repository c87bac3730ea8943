import os

import pytest
import torch

# No network in tests: a Hugging Face cache miss fails at once instead of retrying downloads.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _single_thread_and_seed():
    """The test machine is shared: one thread; every test starts from the same seed."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
