import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread_and_seed():
    """The test machine is shared: one thread; every test starts from the same seed."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
