import os

import pytest

# Ray workers and torch share 2 cores on CI: keep torch single-threaded in the test process.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _torch_threads():
    import torch

    torch.set_num_threads(1)
    yield
