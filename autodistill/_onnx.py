"""ONNX files of a student, for export and for the ``onnxruntime`` latency backend.

Every student goes through the dynamo exporter (``torch.export``): an int8 student (a PT2E
graph, :mod:`autodistill.compress.quantize`) becomes the QDQ format (QuantizeLinear /
DequantizeLinear around the convolutions and matmuls), which ONNX Runtime fuses into int8
kernels. The file has a dynamic batch dimension, input ``input`` and output ``logits``.
"""

from __future__ import annotations

import importlib.util
import platform
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


def saturating_int8_cpu(cpuinfo: str | None = None) -> bool:
    """True on an x86 CPU without VNNI (no ``avx512_vnni``, no ``avx_vnni``): there ONNX
    Runtime's U8S8 kernels add pairs of u8 x s8 products in 16 bits (VPMADDUBSW) and
    saturate, so an int8 network with 8-bit weights runs a few quantization steps away from
    its reference arithmetic (``compress.reduce_range`` avoids it). ``cpuinfo``: the text of
    ``/proc/cpuinfo`` (read where it exists; elsewhere torch's AVX-512 VNNI check)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return not torch.cpu._is_vnni_supported()
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.partition(":")[2].split()}
    return not flags & {"avx512_vnni", "avx_vnni"}
