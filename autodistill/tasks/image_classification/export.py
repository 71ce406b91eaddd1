"""Export an image classifier and prove the files are the model that was measured.

The student is rebuilt from ``trials/<n>/spec.json`` and ``student.pt`` (``weights_only=True``)
and written as PyTorch (state dict + spec), TorchScript (legacy), ONNX and, where ExecuTorch
is installed, an ExecuTorch program (``.pte``, XNNPACK delegate); each file is then run on
the whole validation split: the logits must match PyTorch's within :data:`LOGIT_TOLERANCE`
and the accuracy must match the one recorded by the trial. Only then is the export folder
moved into place, with ``model.json`` (the model card) beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ... import _executorch, _io, layout
from ..._errors import AutodistillError, CheckpointError
from ..._onnx import ort_session, save_onnx
from ...checkpoints import load_state_dict, load_trial_student, trial_params
from ...compress import build_network
from ...compress.quantize import output_step
from ...config import StudyConfig
from ...data import load_dataset
from ...distill.train import predict_logits
from ...measure import saturating_int8_cpu
from ...space import resolve
from .._base import ExportResult, Log, VerificationError

FORMATS = ("pt", "torchscript", "onnx", "executorch")
LOGIT_TOLERANCE = 1e-4
INT8_ONNX = {"mean_steps": 1.0, "agreement": 0.97, "accuracy": 0.02}
"""An int8 student's ONNX and ExecuTorch files run int8 kernels (ONNX Runtime's, XNNPACK's),
which requantize with their own rounding, where PyTorch's PT2E module runs the reference
arithmetic (dequantize, float kernel, quantize): a logit can be a few quantization steps
away, and a near-tie can flip. Their check is statistical: mean |logit diff| at most
``mean_steps`` quantization steps (of the last quantized activation before the logits), the
same top-1 class on at least ``agreement`` of the validation samples, and accuracy within
``accuracy`` (or one sample) of the recorded one. A wrong file (a missing layer, a wrong
scale) fails all three by far."""
INT8_KERNELS = {"onnx": "int8 kernels of ONNX Runtime", "executorch": "int8 kernels of ExecuTorch (XNNPACK)"}
FILES = {"pt": "student.pt", "torchscript": "student.torchscript.pt", "onnx": "student.onnx", "executorch": "student.pte"}
PTE_BATCH = 1  # an ExecuTorch program has a fixed batch size (see autodistill._executorch); phones run one image


def _int8_engine(spec: dict) -> str | None:
    quant = (spec.get("compress") or {}).get("quantize")
    return quant["engine"] if quant else None


def _formats(formats: tuple[str, ...] | None, spec: dict, number: int, log: Log) -> tuple[str, ...]:
    """The formats to write: those asked for, or (None) every one that fits the student:
    ExecuTorch only where it is installed and, for an int8 student, only for engine xnnpack
    (the others' uint8 patterns are not XNNPACK's); asking for it anyway is an error."""
    engine = _int8_engine(spec)
    unfit = engine not in (None, "xnnpack")
    if formats is None:
        if unfit and _executorch.available():
            log(f"  executorch  skipped: an int8 student of compress.engine {engine} is not for ExecuTorch (engine xnnpack is)")
        return tuple(f for f in FORMATS if f != "executorch" or (_executorch.available() and not unfit))
    if "executorch" in formats and unfit:
        raise AutodistillError(
            f"--format executorch: trial {number} is int8 for compress.engine {engine}, whose uint8 patterns ExecuTorch's XNNPACK does not run; quantize with engine xnnpack"
        )
    return formats


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _batched(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.concatenate([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def export_classifier(
    config: StudyConfig, results_dir: Path, summary: dict, row: pd.Series, number: int, formats: tuple[str, ...] | None, out: Path, rule: str, log: Log
) -> ExportResult:
    """Trial ``number``'s classifier as ``formats`` under ``out``, each file verified on the
    whole validation split, with ``model.json`` (see the module doc)."""
    source = layout.trial_dir(results_dir, number)
    if not (source / layout.STUDENT).is_file():
        raise CheckpointError(f"{source / layout.STUDENT}: the checkpoint of trial {number} is missing")
    model, spec = load_trial_student(source)
    model.eval()
    data = load_dataset(config.data)
    x_val = data.normalize(data.x_val[:])  # (N, C, H, W) float: the exported model's input ([:] decodes a streamed split)
    y_val = data.y_val.numpy()
    reference = predict_logits(model, data, "val").numpy()
    recorded = float(row["accuracy"])
    example = x_val[:2].clone()
    formats = _formats(formats, spec, number, log)

    with _io.atomic_dir(out) as staging:
        files: dict[str, Path] = {}
        runners: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
        if "pt" in formats:
            _io.torch_save(staging / FILES["pt"], model.state_dict())
            _io.write_json(staging / "spec.json", spec)
            rebuilt = build_network(json.loads((staging / "spec.json").read_text()))
            rebuilt.load_state_dict(load_state_dict(staging / FILES["pt"], FILES["pt"]))
            rebuilt.eval()
            files["pt"] = staging / FILES["pt"]
            runners["pt"] = lambda x, m=rebuilt: m(torch.from_numpy(x)).detach().numpy()
        if "torchscript" in formats:  # legacy: torch.jit is deprecated (a FutureWarning says so), still what some runtimes load
            with torch.no_grad():
                traced = torch.jit.trace(model, example, check_trace=False)
                _io.atomic_write(staging / FILES["torchscript"], lambda fh: torch.jit.save(traced, fh))
                loaded = torch.jit.load(str(staging / FILES["torchscript"]))
            loaded.eval()
            files["torchscript"] = staging / FILES["torchscript"]
            runners["torchscript"] = lambda x, m=loaded: m(torch.from_numpy(x)).detach().numpy()
        if "onnx" in formats:
            save_onnx(model, example, staging / FILES["onnx"])
            session = ort_session(staging / FILES["onnx"])
            files["onnx"] = staging / FILES["onnx"]
            runners["onnx"] = lambda x, s=session: s.run(["logits"], {"input": x})[0]
        if "executorch" in formats:
            _executorch.require_executorch()
            pte = staging / FILES["executorch"]
            _io.atomic_write(pte, lambda fh: _executorch.save_pte(model, example[:PTE_BATCH], fh))
            method = _executorch.load_method(pte)
            files["executorch"] = pte
            runners["executorch"] = lambda x, m=method: _executorch.run_batched(m, x, PTE_BATCH)

        checks: dict[str, dict[str, Any]] = {}
        x_np = x_val.numpy()
        step = output_step(model)
        for fmt, run in runners.items():
            with torch.no_grad():
                logits = _batched(run, x_np)
            int8_kernels = fmt in INT8_KERNELS and step is not None
            checks[fmt] = check = _compare(logits, reference, y_val, recorded, step if int8_kernels else None, INT8_KERNELS.get(fmt, ""))
            log(f"  {fmt:<11} {files[fmt].name}: {check['summary']}")
            failed = check.pop("failed")
            if failed:
                raise VerificationError(f"{fmt}: {failed} on the validation split{_saturation_hint(fmt, spec, int8_kernels)}")

        trial_cfg = resolve(config, trial_params(source))
        card = _model_card(summary, row, number, rule, spec, trial_cfg, data, files, checks, config)
        _io.write_json(staging / "model.json", card)
    return ExportResult(out, number, {fmt: out / p.name for fmt, p in files.items()}, checks, card)


def _saturation_hint(fmt: str, spec: dict, int8_kernels: bool) -> str:
    """Why ONNX Runtime may disagree with an int8 network of 8-bit weights on this CPU."""
    quant = (spec.get("compress") or {}).get("quantize") or {}
    if fmt != "onnx" or not int8_kernels or quant.get("reduce_range") or not saturating_int8_cpu():
        return ""
    return (
        "; this x86 CPU has no VNNI, and ONNX Runtime's int8 kernels saturate there with 8-bit weights "
        "(the file is right on CPUs with VNNI and on ARM): to deploy on such CPUs, search with compress.reduce_range: true (7-bit weights)"
    )


def _compare(
    logits: np.ndarray, reference: np.ndarray, y: np.ndarray, recorded: float, int8_step: float | None, runtime: str = INT8_KERNELS["onnx"]
) -> dict[str, Any]:
    """How an exported file's logits compare with PyTorch's: exact (within
    :data:`LOGIT_TOLERANCE`, accuracy within one sample) or, for a runtime's int8 kernels
    (``int8_step`` = the quantization step, ``runtime`` names them), by :data:`INT8_ONNX`."""
    diff = np.abs(logits - reference)
    accuracy = float((logits.argmax(axis=1) == y).mean())
    one_sample = 1.0 / len(y)
    out: dict[str, Any] = {"max_abs_diff": float(diff.max()), "accuracy": accuracy, "recorded_accuracy": recorded, "samples": int(len(y))}
    seen = f"validation accuracy {accuracy:.4f} (recorded {recorded:.4f})"
    failed = None
    if int8_step is None:
        out["tolerance"] = LOGIT_TOLERANCE
        out["summary"] = f"max |logit diff| vs PyTorch {out['max_abs_diff']:.2e}, {seen}"
        if not out["max_abs_diff"] <= LOGIT_TOLERANCE:
            failed = f"logits differ from PyTorch by {out['max_abs_diff']:.3g} (> {LOGIT_TOLERANCE:g})"
        accuracy_tolerance = one_sample
    else:
        mean_steps = float(diff.mean()) / int8_step
        agreement = float((logits.argmax(axis=1) == reference.argmax(axis=1)).mean())
        out.update(
            output_step=int8_step,
            mean_abs_diff_steps=mean_steps,
            max_abs_diff_steps=out["max_abs_diff"] / int8_step,
            top1_agreement=agreement,
            criteria=INT8_ONNX,
        )
        out["summary"] = (
            f"{runtime}: mean |logit diff| {mean_steps:.2f} quantization steps (max {out['max_abs_diff_steps']:.1f}), "
            f"same top-1 on {agreement:.2%} of samples, {seen}"
        )
        if mean_steps > INT8_ONNX["mean_steps"]:
            failed = f"mean |logit diff| is {mean_steps:.2f} quantization steps of the output (> {INT8_ONNX['mean_steps']:g})"
        elif agreement < INT8_ONNX["agreement"]:
            failed = f"the top-1 class differs from PyTorch's on {1 - agreement:.1%} of samples (> {1 - INT8_ONNX['agreement']:.0%})"
        accuracy_tolerance = max(one_sample, INT8_ONNX["accuracy"])
    if failed is None and abs(accuracy - recorded) > accuracy_tolerance + 1e-9:
        failed = f"validation accuracy {accuracy:.4f} does not match the recorded {recorded:.4f}"
    out["failed"] = failed
    return out


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("autodistill", "torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "optuna", "ray"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def _model_card(summary, row, number, rule, spec, trial_cfg, data, files, checks, config) -> dict[str, Any]:
    metrics = {}
    for key in ("accuracy", "test_accuracy", "params", "macs", "size_mb", "latency_ms", "latency_ms_in_trial"):
        value = row.get(key)
        if value is not None and pd.notna(value):
            metrics[key] = int(value) if key in ("params", "macs") else float(value)
    if isinstance(row.get("latency_measured"), str):
        metrics["latency_measured"] = row["latency_measured"]
    return {
        "format": "autodistill model card v1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "study": summary["name"],
        "trial": number,
        "picked_by": rule,
        "architecture": spec,
        "recipe": {
            "searched": {k[len("param.") :]: (v.item() if hasattr(v, "item") else v) for k, v in row.items() if k.startswith("param.") and pd.notna(v)},
            "train": trial_cfg.train.model_dump(mode="json"),
            "distill": trial_cfg.distill.model_dump(mode="json"),
            "compress": trial_cfg.compress.model_dump(mode="json"),
            "seed": config.search.seed,
        },
        "metrics": metrics,
        "latency": {
            "device": config.latency.device,
            "backend": config.latency.backend,
            "batch_size": config.latency.batch_size,
            "threads": config.latency.threads,
            "clock_reference_ms": summary.get("latency_clock_ms"),  # the speed the CPU figures are scaled to (measure.time_runs)
        },
        "teacher": summary.get("teacher"),
        "data": {
            "dataset": data.name,
            "classes": data.classes,
            "input": {"shape": ["batch", data.in_channels, data.image_size, data.image_size], "dtype": "float32", "name": "input"},
            "output": {"shape": ["batch", data.num_classes], "name": "logits"},
            "preprocessing": {
                "formula": "input = (pixels / scale - mean[c]) / std[c]",
                "scale": data.scale,
                "mean": list(data.mean),
                "std": list(data.std),
            },
            "splits": {"train": int(len(data.y_train)), "val": int(len(data.y_val)), "test": int(len(data.y_test))},
        },
        "files": {fmt: {"path": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)} for fmt, path in files.items()},
        "verification": {"logit_tolerance": LOGIT_TOLERANCE, **checks},
        "versions": _versions(),
    }
