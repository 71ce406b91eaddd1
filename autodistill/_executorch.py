"""ExecuTorch programs (``.pte``) of a student, for export and for the ``executorch`` latency
backend: the network captured by ``torch.export`` at a fixed batch size, lowered with the
XNNPACK partitioner (float and int8 QDQ patterns run in XNNPACK; anything it does not take
runs in ExecuTorch's portable kernels), and run by ExecuTorch's Python runtime.

The batch size is fixed: ExecuTorch plans its memory for bounded shapes, and a dynamic batch
was refused past 15 samples here (ExecuTorch 1.5.1: ``Attempted to resize a bounded tensor``).
Phones run batch 1; :func:`run_batched` feeds a larger array one program-sized batch at a time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ._errors import AutodistillError


def available() -> bool:
    return importlib.util.find_spec("executorch") is not None


def require_executorch() -> None:
    if not available():
        raise AutodistillError("ExecuTorch is not installed: pip install executorch")


def save_pte(model: torch.nn.Module, example: torch.Tensor, out: Path | BinaryIO) -> None:
    """Write ``model`` (eval mode) as an ExecuTorch program for inputs shaped like ``example``
    to ``out`` (a path, or a file open for binary writing)."""
    require_executorch()
    import executorch.kernels.quantized  # noqa: F401  (out variants of the q/dq ops XNNPACK does not take)
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with torch.no_grad():
        program = torch.export.export(model, (example,))
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    if isinstance(out, Path):
        out.write_bytes(lowered.buffer)
    else:
        out.write(lowered.buffer)


class Method:
    """A loaded program's ``forward`` (the program is kept alive with it)."""

    def __init__(self, path: Path):
        require_executorch()
        from executorch.runtime import Runtime

        self.program = Runtime.get().load_program(str(path))
        self.method = self.program.load_method("forward")

    def execute(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.method.execute(inputs)


def load_method(path: Path) -> Method:
    """The program's ``forward``, loaded by ExecuTorch's runtime."""
    return Method(path)


def set_threads(n: int) -> None:
    """ExecuTorch's (XNNPACK's) thread pool at ``n`` threads; it is process-wide and starts at
    the machine's cores. Set before a program is loaded and never put back: a program holds
    the pool it was loaded with, and a reset under a loaded program deadlocked its next run
    here (ExecuTorch 1.5.1). The reset is an experimental API of ExecuTorch's pybindings
    (it warns so); without it the pool is left as it is."""
    from executorch.extension.pybindings import portable_lib

    reset, count = getattr(portable_lib, "_unsafe_reset_threadpool", None), getattr(portable_lib, "_threadpool_get_thread_count", None)
    if reset is not None and count is not None and count() != n:
        reset(n)


def run_batched(method, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits of ``x`` (N, ...) through a program of batch ``batch_size``; the last partial
    batch is padded with zeros and the padding dropped."""
    out = []
    for i in range(0, len(x), batch_size):
        chunk = x[i : i + batch_size]
        pad = batch_size - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), dtype=chunk.dtype)])
        out.append(method.execute([torch.from_numpy(np.ascontiguousarray(chunk))])[0].numpy()[: batch_size - pad])
    return np.concatenate(out)
