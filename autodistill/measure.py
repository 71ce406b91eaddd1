"""Cost of a network: parameters, MACs, state-dict size and measured latency."""

from __future__ import annotations

import io
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from ._executorch import load_method, save_pte
from ._executorch import set_threads as set_executorch_threads
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
def threads(n: int):
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
    ``cfg.backend`` (see :func:`latency_runner`), at the speed the CPU had when the clock's
    reference was taken (:func:`time_runs`). On CUDA the timing is taken with CUDA events
    after synchronisation. int8 students run on the CPU only."""
    repeats = repeats or cfg.repeats
    with threads(cfg.threads), latency_runner(model, input_shape, cfg) as run:
        times = time_runs(run, cfg.warmup, repeats, cuda=cfg.device == "cuda")
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


@contextmanager
def latency_runner(model: nn.Module, input_shape: tuple[int, ...], cfg: LatencyConfig) -> Iterator[Callable[[], object]]:
    """A call that runs one forward pass of a ``cfg.batch_size`` batch the way ``cfg.backend``
    deploys ``model``: ``torch`` (the module itself, eval mode), ``torch_compile`` (inductor,
    weights frozen: an int8 network runs oneDNN's int8 kernels), ``torchscript`` (traced and
    frozen), ``onnxruntime`` (exported to ONNX, a CPU session) or ``executorch`` (a ``.pte``
    with the XNNPACK delegate, at that batch size). Built once (export, lowering, compilation
    are not timed); the model is put back as it was on exit."""
    device = torch.device(cfg.device)
    x = _input(cfg.batch_size, input_shape)
    was_training = model.training
    model.eval()
    try:
        with tempfile.TemporaryDirectory(prefix="autodistill-latency-") as tmp, torch.inference_mode():
            if cfg.backend == "onnxruntime":
                save_onnx(model.to("cpu"), x, Path(tmp) / "model.onnx")
                session, feed = ort_session(Path(tmp) / "model.onnx", threads=cfg.threads), {"input": x.numpy()}
                yield lambda: session.run(None, feed)
            elif cfg.backend == "executorch":
                save_pte(model.to("cpu"), x, Path(tmp) / "model.pte")
                set_executorch_threads(cfg.threads)
                method, inputs = load_method(Path(tmp) / "model.pte"), [x]
                yield lambda: method.execute(inputs)
            else:
                with _compiled(cfg.backend == "torch_compile"):
                    run, x_on = _torch_runner(model.to(device), x.to(device), cfg.backend)
                    yield lambda: run(x_on)
    finally:
        model.to("cpu").train(was_training)


def _torch_runner(model: nn.Module, x: torch.Tensor, backend: str) -> tuple[Callable, torch.Tensor]:
    if backend == "torchscript":
        with torch.no_grad():
            return torch.jit.freeze(torch.jit.trace(model, x, check_trace=False).eval()), x
    if backend == "torch_compile":
        compiled = torch.compile(model, dynamic=False)
        compiled(x)  # compiles: not timed, not a warm-up run
        return compiled, x
    return model, x


@contextmanager
def _compiled(on: bool):
    """Inductor with frozen weights (constant-folded, so an int8 network's quantized weights
    go to oneDNN's int8 convolutions and matmuls), on a fresh compile cache entry."""
    if not on:
        yield
        return
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    with inductor_config.patch(freezing=True):
        yield


def time_runs(run: Callable[..., object], warmup: int, repeats: int, cuda: bool = False, setup: Callable[[], object] | None = None) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``run`` after ``warmup`` untimed ones
    (``run(setup())`` where ``setup`` is given: its call is not timed).

    CUDA: events around each call, after synchronisation. CPU: the calls are timed in blocks of
    :data:`CLOCK_BLOCK`, each after an untimed call and followed by as many runs of a fixed
    clock workload (after an untimed one); a call's time is scaled by the clock's median in
    its block: ``run × reference / clock``, where the reference is the clock's time when this process
    (or the study, :func:`set_clock_reference`) first took it. A shared machine's CPU runs
    at different speeds from one second to the next, and a slower moment slows both alike:
    the figures of networks timed at different moments stay comparable (measured on a 2-core
    cloud VM, ``scripts/bench_latency.py``: 20 measurements of one network in one process
    spread by 1.8-2.6× as plain medians, 1.1-1.5× scaled)."""
    if setup is None:
        setup, call = (lambda: None), (lambda _: run())
    else:
        call = run
    if cuda:
        for _ in range(warmup):
            call(setup())
        torch.cuda.synchronize()
        times: list[float] = []
        for _ in range(repeats):
            arg = setup()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call(arg)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return times
    clock, reference = _clock(), clock_reference_ms()
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            call(setup())
            clock()
        for first in range(0, repeats, CLOCK_BLOCK):
            block = []
            call(setup())  # untimed, as is the clock's first run below: each block starts warm
            for _ in range(min(CLOCK_BLOCK, repeats - first)):
                arg = setup()
                t0 = time.perf_counter()
                call(arg)
                block.append(time.perf_counter() - t0)
            clock()
            scale = reference / statistics.median(_seconds(clock, CLOCK_BLOCK))
            times.extend(t * scale for t in block)
    return times


def _seconds(run: Callable[[], object], n: int) -> list[float]:
    """Seconds of each of ``n`` calls of ``run``."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times


CLOCK_BLOCK = 5
"""timed runs per block on the CPU: each block of the network's runs is followed by as many
of the clock's, and scaled by their median"""


_CLOCK: list[Callable[[], object]] = []
_REFERENCE: dict[int, float] = {}


def _clock() -> Callable[[], object]:
    """The clock workload: a fixed small convolutional network (eager torch, eval mode, a
    fixed input; about 0.1 ms on one thread of a 2-core cloud VM), built once per process
    from its own generator: the global RNG does not move."""
    if not _CLOCK:
        generator = torch.Generator().manual_seed(0)
        with torch.random.fork_rng(devices=[]):
            net = nn.Sequential(
                nn.Conv2d(8, 16, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 16, 3, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(16, 10),
            ).eval()
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
        x = torch.randn(1, 8, 16, 16, generator=generator)
        _CLOCK.append(lambda: net(x))
    return _CLOCK[0]


def clock_reference_ms(n_threads: int | None = None, window_s: float | None = None) -> float:
    """The clock's reference time at ``n_threads`` intra-op threads (default: the current
    setting): the one set for the study, else measured once in this process
    (:func:`measure_clock` over ``window_s``)."""
    n_threads = n_threads or torch.get_num_threads()
    if n_threads not in _REFERENCE:
        with threads(n_threads):
            _REFERENCE[n_threads] = measure_clock(window_s)
    return _REFERENCE[n_threads]


def _cpuinfo() -> str | None:
    """Linux's /proc/cpuinfo, or None where there is none."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return None


def cpu_name() -> str:
    """The CPU model (Linux's /proc/cpuinfo), else what ``platform.processor()`` says."""
    lines = (_cpuinfo() or "").splitlines()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())


def saturating_int8_cpu(cpuinfo: str | None = None) -> bool:
    """True on an x86 CPU without VNNI (no ``avx512_vnni``, no ``avx_vnni``): there ONNX
    Runtime's U8S8 kernels add pairs of u8 x s8 products in 16 bits (VPMADDUBSW) and
    saturate, so an int8 network with 8-bit weights runs a few quantization steps away from
    its reference arithmetic (``compress.reduce_range`` avoids it). ``cpuinfo``: the text of
    ``/proc/cpuinfo`` (read where it exists; elsewhere torch's AVX-512 VNNI check)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    if cpuinfo is None:
        return not torch.cpu._is_vnni_supported()
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.partition(":")[2].split()}
    return not flags & {"avx512_vnni", "avx_vnni"}


def clock_key(n_threads: int) -> str:
    """What a clock reference holds for: the CPU model, the thread count and torch's version."""
    return f"{cpu_name() or platform.machine()} | {n_threads} thread(s) | torch {torch.__version__}"


def set_clock_reference(n_threads: int, ms: float) -> None:
    """Time at the speed of a reference taken elsewhere (the study's, in its driver): the
    trials' figures, the teacher's and the re-measured front's are then in one unit."""
    _REFERENCE[n_threads] = ms


def measure_clock(window_s: float | None = None, runs: int = 25, pause_s: float = 0.02) -> float:
    """The clock's time, in ms: the fastest of the medians of batches of ``runs`` runs, one
    batch every ``pause_s`` for ``window_s`` seconds (:data:`CLOCK_WINDOW_S`; about 0.1 s of
    work in all). On a shared machine the CPU is slow for seconds at a time (measured on a
    2-core cloud VM: 0.5-1.7 s long, 80% of the time when its neighbours were busy, at up
    to 2× the time): a reference taken within 0.1 s was one of those half the time, and a
    study started then would have timed everything at that speed; over 2 s the fastest batch
    was within 15% of the fastest of 30 s."""
    window_s = CLOCK_WINDOW_S if window_s is None else window_s
    clock = _clock()
    medians: list[float] = []
    with torch.inference_mode():
        for _ in range(runs):
            clock()
        started = time.perf_counter()
        while len(medians) < 10 or time.perf_counter() - started < window_s:
            medians.append(statistics.median(_seconds(clock, runs)) * 1e3)
            time.sleep(pause_s)
    return min(medians)


CLOCK_WINDOW_S = 2.0
"""how long the clock's reference is sampled for (see :func:`measure_clock`)"""


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
