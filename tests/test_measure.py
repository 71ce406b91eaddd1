import json

import pytest
import torch
import torch.nn as nn
from helpers import small_study

from autodistill import measure
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


def test_timing_leaves_the_global_rng_alone(monkeypatch):
    monkeypatch.setattr(measure, "_CLOCK", [])  # the clock network is built here too
    monkeypatch.setattr(measure, "_REFERENCE", {})  # and its reference taken
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


class _Machine:
    """A fake ``time.perf_counter`` that work advances by its cost over the machine's speed."""

    def __init__(self, monkeypatch):
        self.now, self.speed = 0.0, 1.0
        monkeypatch.setattr(measure.time, "perf_counter", lambda: self.now)
        monkeypatch.setattr(measure, "_REFERENCE", {})

    def work(self, seconds):
        def run():
            self.now += seconds / self.speed

        return run


def test_cpu_times_are_scaled_by_the_clock_so_a_slower_moment_does_not_show(monkeypatch):
    machine = _Machine(monkeypatch)
    monkeypatch.setattr(measure, "_CLOCK", [machine.work(1e-4)])  # the clock: 0.1 ms at full speed
    measure.set_clock_reference(torch.get_num_threads(), 0.1)
    network, calls = machine.work(3e-4), [0]

    def run():
        calls[0] += 1
        if calls[0] == 21:  # 2 warm-up calls, then blocks of an untimed call and 5 timed: the fourth block
            machine.speed = 0.4  # runs at 0.4 of the speed, the clock's runs after it too
        network()

    times = measure.time_runs(run, warmup=2, repeats=30)
    assert calls[0] == 2 + 6 * 6
    assert times == pytest.approx([0.3] * 30)  # unscaled, the last 15 would read 0.75 ms


def test_setup_is_not_timed(monkeypatch):
    machine = _Machine(monkeypatch)
    monkeypatch.setattr(measure, "_CLOCK", [machine.work(1e-4)])
    measure.set_clock_reference(torch.get_num_threads(), 0.1)
    prompt = machine.work(5e-3)

    def setup():
        prompt()  # e.g. the prompt that fills a language model's cache before decoding
        return 2e-4

    times = measure.time_runs(lambda seconds: machine.work(seconds)(), warmup=1, repeats=7, setup=setup)
    assert times == pytest.approx([0.2] * 7)


def test_the_clock_reference_is_its_fastest_batch_over_its_window(monkeypatch):
    machine = _Machine(monkeypatch)
    monkeypatch.setattr(measure.time, "sleep", lambda s: setattr(machine, "now", machine.now + s))
    clock, batches = machine.work(1e-4), []

    def slow_then_fast():
        batches.append(machine.now)
        machine.speed = 0.5 if machine.now < 1.5 else 1.0  # the first 1.5 s at half speed
        clock()

    monkeypatch.setattr(measure, "_CLOCK", [slow_then_fast])
    assert measure.measure_clock(window_s=2.0, runs=25, pause_s=0.02) == pytest.approx(0.1)
    assert 1.9 < machine.now < 2.1  # about the window, a batch every 20 ms: 25 runs of 0.1-0.2 ms apart
    assert measure.measure_clock(window_s=1.0) == pytest.approx(0.1)  # a later window, all fast
    machine.now = 0.0
    assert measure.measure_clock(window_s=1.0) == pytest.approx(0.2)  # a window within the slow second: its speed


def test_a_study_looks_at_the_clock_briefly_where_its_results_folder_has_a_reference(tmp_path, monkeypatch):
    # the first trials wait for the driver's start-up; the full 2-s look was 2 s of every study
    from autodistill.loading import load_config
    from autodistill.tune.runner import _clock_file, _remember_clock, _study_clock

    config = load_config(small_study(tmp_path, cached_teacher=False))
    windows = []
    looks = iter([0.12, 0.11, 0.07])

    def look(window_s=None):
        windows.append(window_s)
        return next(looks)

    monkeypatch.setattr(measure, "measure_clock", look)
    monkeypatch.setattr(measure, "_REFERENCE", {})
    assert _study_clock(config, resume=False) == 0.12 and windows == [None]  # no reference yet: the full window
    _remember_clock(_clock_file(config), config.latency.threads, 0.10)
    for expected in (0.10, 0.07):  # a short look, which lowers the folder's only where it is faster
        monkeypatch.setattr(measure, "_REFERENCE", {})
        assert _study_clock(config, resume=False) == expected
    assert windows == [None, 0.0, 0.0]


def test_a_results_folder_keeps_the_fastest_clock_reference(tmp_path):
    from autodistill.tune.runner import _clock_entries, _folder_clock, _remember_clock

    path = tmp_path / "results" / ".clock.json"
    assert _folder_clock(_clock_entries(path), 1) is None  # no file yet
    _remember_clock(path, 1, 0.10)
    _remember_clock(path, 1, 0.15)  # a study that began in a slow second: the kept one stays
    assert _folder_clock(_clock_entries(path), 1) == 0.10
    _remember_clock(path, 1, 0.08)  # a faster one replaces it
    assert json.loads(path.read_text()) == {measure.clock_key(1): 0.08}
    _remember_clock(path, 2, 0.3)  # another thread count is another clock
    assert _folder_clock(_clock_entries(path), 2) == 0.3 and _folder_clock(_clock_entries(path), 1) == 0.08
    path.write_text("{not json")
    assert _folder_clock(_clock_entries(path), 1) is None  # unreadable: none
    _remember_clock(path, 1, 0.12)
    assert json.loads(path.read_text()) == {measure.clock_key(1): 0.12}
    blocked = tmp_path / "file"
    blocked.write_text("")
    _remember_clock(blocked / ".clock.json", 1, 0.2)  # cannot be written: no error
    assert _folder_clock(_clock_entries(blocked / ".clock.json"), 1) is None
