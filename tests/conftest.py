import compileall
import os
from pathlib import Path

import pytest

# Ray workers and torch share 2 cores on CI: keep torch single-threaded in the test process.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    """The project machines set PYTHONDONTWRITEBYTECODE=1, and an editable install has no
    bytecode of autodistill: every CLI process and Ray worker of the suite (~150) would compile
    its ~75 modules again (~0.1 s each time). Compiled once here instead (py_compile writes
    whatever that variable says); the __pycache__ folders are git-ignored."""
    compileall.compile_dir(Path(__file__).resolve().parents[1] / "autodistill", quiet=1)


@pytest.fixture(autouse=True)
def _torch_threads():
    import torch

    torch.set_num_threads(1)
    yield
