import torch
import torch.nn as nn

from autodistill.config import LatencyConfig
from autodistill.measure import count_macs, count_params, measure_latency, state_dict_mb, static_costs


def test_params_and_macs_of_known_layers():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_params(conv) == 8 * 3 * 9
    assert count_macs(conv, (3, 10, 10)) == 8 * 3 * 9 * 10 * 10  # one MAC per weight per output pixel
    linear = nn.Linear(16, 4)
    assert count_macs(linear, (16,)) == 16 * 4


def test_size_grows_with_params():
    small, big = nn.Linear(10, 10), nn.Linear(100, 100)
    assert state_dict_mb(big) > state_dict_mb(small) + 0.039  # 10,100 more float32 values
    assert abs(state_dict_mb(big) - 101 * 100 * 4 / 1e6) < 0.01  # float32 plus a small header


def test_latency_is_positive_and_ordered():
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10))
    lat = measure_latency(model, (1, 8, 8), LatencyConfig(repeats=20, warmup=2))
    assert 0 < lat.p10_ms <= lat.median_ms <= lat.p90_ms
    assert lat.repeats == 20
    assert model.training  # mode restored
    assert set(static_costs(model, (1, 8, 8))) == {"params", "macs", "size_mb"}


def test_timing_leaves_the_global_rng_alone():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten())
    torch.manual_seed(5)
    before = torch.get_rng_state()
    measure_latency(model, (1, 8, 8), LatencyConfig(warmup=1, repeats=2))
    assert torch.equal(torch.get_rng_state(), before)


def test_peak_memory_is_this_process_not_its_parent():
    """ru_maxrss survives fork + exec: a study started by a big process must not report it."""
    import subprocess
    import sys

    from autodistill.measure import peak_rss_mb

    ballast = bytearray(600 * 2**20)  # the parent's peak grows by 600 MiB
    ballast[::4096] = b"x" * len(ballast[::4096])  # touched, so resident
    parent = peak_rss_mb()
    child = subprocess.run(
        [sys.executable, "-c", "from autodistill.measure import peak_rss_mb; print(peak_rss_mb())"], capture_output=True, text=True, check=True
    )
    assert float(child.stdout) < parent - 300
    del ballast
