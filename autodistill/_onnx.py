"""ONNX files of a student, for export and for the ``onnxruntime`` latency backend.

Every student goes through the dynamo exporter (``torch.export``): an int8 student (a PT2E
graph, :mod:`autodistill.compress.quantize`) becomes the QDQ format (QuantizeLinear /
DequantizeLinear around the convolutions and matmuls), which ONNX Runtime fuses into int8
kernels. The file has a dynamic batch dimension, input ``input`` and output ``logits``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from ._errors import AutodistillError
from .compress.quantize import MAX_BATCH


def require_onnx() -> None:
    if not all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")):
        raise AutodistillError("ONNX needs the packages onnx, onnxscript and onnxruntime: pip install onnx onnxscript onnxruntime")


def save_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """Write ``model`` (eval mode) as ONNX to ``path``; ``example`` is a (B, C, H, W) batch."""
    require_onnx()
    with torch.no_grad():
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            external_data=False,
            verbose=False,
        )
        program.save(str(path), external_data=False)


def ort_session(path: Path, threads: int | None = None):
    """An ONNX Runtime CPU session (intra-op threads fixed when given, one inter-op thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
