"""Cost of a network: parameters, MACs, state-dict size and measured latency."""

from __future__ import annotations

import io
import statistics
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from ._onnx import ort_session, save_onnx
from .config import LatencyConfig


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of a single image, from PyTorch's own
    FLOP counter (``torch.utils.flop_counter``, which counts 2 FLOPs per MAC)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    return counter.get_total_flops() // 2


def state_dict_mb(model: nn.Module) -> float:
    """Size of the serialised state dict (what ``student.pt`` takes on disk), in MB (1e6 bytes)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 1e6


@contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int


def measure_latency(model: nn.Module, input_shape: tuple[int, ...], cfg: LatencyConfig, repeats: int | None = None) -> Latency:
    """Median wall time of one forward pass of a batch of ``cfg.batch_size``, in eval mode,
    after ``cfg.warmup`` untimed runs, with ``cfg.threads`` intra-op threads, run by
    ``cfg.backend``: ``torch`` (the module itself), ``torchscript`` (traced and frozen) or
    ``onnxruntime`` (exported to ONNX, CPU session). On CUDA the timing is taken with CUDA
    events after synchronisation. int8 students run on the CPU only."""
    repeats = repeats or cfg.repeats
    device = torch.device(cfg.device)
    was_training = model.training
    model.eval()
    try:
        with _threads(cfg.threads):
            if cfg.backend == "onnxruntime":
                times = _time_onnxruntime(model, input_shape, cfg, repeats)
            else:
                times = _time_torch(model, input_shape, cfg, repeats, device)
    finally:
        model.to("cpu").train(was_training)
    median, p10, p90 = spread(times)
    return Latency(median_ms=median, p10_ms=p10, p90_ms=p90, repeats=repeats)


def spread(times: list[float]) -> tuple[float, float, float]:
    """(median, p10, p90) of timed runs."""
    times = sorted(times)
    return statistics.median(times), times[int(0.1 * (len(times) - 1))], times[int(0.9 * (len(times) - 1))]


def _input(batch_size: int, input_shape: tuple[int, ...]) -> torch.Tensor:
    """The timed batch, from its own generator: timing between epochs must not move the
    training RNG (an interrupted trial continues exactly)."""
    return torch.randn(batch_size, *input_shape, generator=torch.Generator().manual_seed(0))


def _time_torch(model: nn.Module, input_shape, cfg: LatencyConfig, repeats: int, device: torch.device) -> list[float]:
    model_on = model.to(device)
    x = _input(cfg.batch_size, input_shape).to(device)
    if cfg.backend == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model_on = torch.jit.freeze(torch.jit.trace(model_on, x, check_trace=False).eval())
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(cfg.warmup):
            model_on(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
            for _ in range(repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                model_on(x)
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
        else:
            for _ in range(repeats):
                t0 = time.perf_counter()
                model_on(x)
                times.append((time.perf_counter() - t0) * 1e3)
    return times


def _time_onnxruntime(model: nn.Module, input_shape, cfg: LatencyConfig, repeats: int) -> list[float]:
    x = _input(cfg.batch_size, input_shape)
    with tempfile.TemporaryDirectory(prefix="autodistill-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        save_onnx(model.to("cpu"), x, path)
        session = ort_session(path, threads=cfg.threads)
    feed = {"input": x.numpy()}
    for _ in range(cfg.warmup):
        session.run(None, feed)
    times: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def static_costs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """The costs known before training: params, MACs, size_mb."""
    return {
        "params": count_params(model),
        "macs": count_macs(model, input_shape),
        "size_mb": state_dict_mb(model),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB: Linux's VmHWM, which starts again
    at exec (ru_maxrss keeps the parent's peak across fork + exec, so a study started by a
    big process would report that process's memory); ru_maxrss elsewhere (bytes on macOS)."""
    import resource

    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
