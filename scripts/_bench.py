"""Shared by the benchmark scripts: the machine they ran on, robust summaries, the JSON file."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "results" / "benchmarks"


def _versions(*packages: str) -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict:
    import torch

    from autodistill.measure import cpu_name, saturating_int8_cpu

    return {
        "cpu": cpu_name(),
        "isa": torch.backends.cpu.get_cpu_capability(),  # the vector unit torch's kernels use (AVX2, AVX512, ...)
        "int8_vnni": not saturating_int8_cpu(),  # x86 without VNNI: ONNX Runtime's int8 kernels saturate 8-bit weights
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        **_versions("torchao", "onnxruntime", "executorch"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }


def synthetic(n: int):
    """``n`` random 32x32x3 uint8 images of 10 classes (the first 256 are also the validation
    and test splits): a CIFAR-sized workload for timing, not for accuracy."""
    import torch

    from autodistill.data import Dataset

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return Dataset("synthetic", x, y, x[:256], y[:256], x[:256], y[:256], classes=[str(i) for i in range(10)], scale=255.0)


def spread(values: list[float]) -> dict:
    """Median, min, max and the number of repeats."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values), "values": values}


def write(name: str, payload: dict) -> Path:
    """Atomically write ``results/benchmarks/<name>.json``."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    payload = {"benchmark": name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join([Path(sys.executable).name, *sys.argv]), **payload}
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path
