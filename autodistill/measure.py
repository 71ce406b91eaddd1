"""Cost of a network: parameters, MACs, state-dict size and measured latency."""

from __future__ import annotations

import io
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn

from .config import LatencyConfig


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of a single image, from PyTorch's own
    FLOP counter (``torch.utils.flop_counter``, which counts 2 FLOPs per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

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


def measure_latency(
    model: nn.Module, input_shape: tuple[int, ...], cfg: LatencyConfig, repeats: int | None = None
) -> Latency:
    """Median wall time of ``model(x)`` for a batch of ``cfg.batch_size`` in eval mode, after
    ``cfg.warmup`` untimed runs, on ``cfg.device`` with ``cfg.threads`` intra-op threads.
    On CUDA the timing is taken with CUDA events after synchronisation."""
    repeats = repeats or cfg.repeats
    device = torch.device(cfg.device)
    was_training = model.training
    model.eval()
    model_on = model.to(device)
    x = torch.randn(cfg.batch_size, *input_shape, device=device)
    times: list[float] = []
    with _threads(cfg.threads), torch.inference_mode():
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
    model.to("cpu").train(was_training)
    times.sort()
    return Latency(
        median_ms=statistics.median(times),
        p10_ms=times[int(0.1 * (len(times) - 1))],
        p90_ms=times[int(0.9 * (len(times) - 1))],
        repeats=repeats,
    )


def static_costs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """The costs known before training: params, MACs, size_mb."""
    return {
        "params": count_params(model),
        "macs": count_macs(model, input_shape),
        "size_mb": state_dict_mb(model),
    }
