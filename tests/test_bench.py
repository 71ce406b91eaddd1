"""The benchmark scripts' own arithmetic (hypervolume in the search benchmark's box, the
compute needed to reach a level), and the scripts' smoke runs (slow)."""

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script(name):
    sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BOX = {"error_ref": 0.2, "log_min": 3.0, "log_ref": 6.0}  # error 0..0.2 x log10(cost) 3..6 (teacher 1e6); area 0.2 * 3


def test_search_hypervolume_by_hand():
    b = _script("bench_search")
    assert b.hypervolume([(0.9, 1000)], BOX) == pytest.approx(0.1 * 3 / 0.6)  # error 0.1, the smallest size: half the box
    assert b.hypervolume([(0.9, 10**4.5)], BOX) == pytest.approx(0.1 * 1.5 / 0.6)
    two = [(0.9, 1000), (0.95, 10**4.5)]  # an L-shape: 0.1*3 + 0.05*1.5
    assert b.hypervolume(two, BOX) == pytest.approx((0.1 * 3 + 0.05 * 1.5) / 0.6)
    assert b.hypervolume([(0.7, 1000), (0.9, 2e6)], BOX) == 0.0  # outside the box adds nothing
    assert b.hypervolume([(1.0, 10)], BOX) == pytest.approx(1.0)  # perfect and tinier than the box: clipped to it
    latency = {"error_ref": 0.5, "log_min": -2.0, "log_ref": 0.0}  # latency 0.01..1 ms
    assert b.hypervolume([(0.75, 0.1)], latency) == pytest.approx(0.25 * 1.0 / 1.0)


def test_curve_and_compute_to_reach():
    b = _script("bench_search")
    done = [
        {"accuracy": 0.9, "params": 1000, "study_epochs": 15},
        {"accuracy": 0.85, "params": 1000, "study_epochs": 55},
        {"accuracy": 0.95, "params": 10**4.5, "study_epochs": 40},
    ]
    curve = b.hv_curve(done, BOX, "params")
    assert [e for e, _ in curve] == [15, 40, 55]  # in the order the trials completed
    assert curve[0][1] == pytest.approx(0.5) and curve[1][1] == pytest.approx((0.3 + 0.075) / 0.6) and curve[2][1] == curve[1][1]
    assert b.hv_at(curve, 10) == 0.0 and b.hv_at(curve, 39) == pytest.approx(0.5) and b.hv_at(curve, 400) == curve[-1][1]
    assert b.epochs_to_reach(curve, 0.6) == 40 and b.epochs_to_reach(curve, 0.7) is None


def test_search_targets_read_the_best_of_ours_both_ways():
    """Target 1 is checked for the arm of ours with the highest final, and the list of arms
    that reach random's final within 1/4 on every seed and end at or above every peer."""
    b = _script("bench_search")
    trials = {"COMPLETE": 1, "PRUNED": 0, "FAIL": 0}

    def run(arm, seed, curve):
        return {"arm": arm, "seed": seed, "curve": curve, "final_hypervolume": curve[-1][1], "trials": trials, "wall_s": 1.0}

    runs = [run("random", s, [[90, 0.4], [400, 0.6]]) for s in (0, 1)]  # random's final: 0.6
    runs += [run("tpe+pareto", s, [[200, 0.6], [400, 0.9]]) for s in (0, 1)]  # the highest final, late
    runs += [run("tpe+pareto+students6", 0, [[90, 0.6], [400, 0.7]]), run("tpe+pareto+students6", 1, [[100, 0.65], [400, 0.7]])]  # early, lower
    runs += [run("gp", s, [[400, 0.65]]) for s in (0, 1)]
    out = b.summarise(runs, 400, ["random", "tpe+pareto", "tpe+pareto+students6", "gp"])
    targets = out["targets"]
    first = targets["tpe+pareto (best of ours) reaches random's final hypervolume with <= 1/4 of the compute on every seed"]
    assert first["fractions"] == [0.5, 0.5] and not first["met"]
    assert targets["tpe+pareto final hypervolume >= gp's"]["met"]
    both = targets["an arm of ours reaches random's final with <= 1/4 of the compute on every seed and ends >= every peer"]
    assert both == {"arms": ["tpe+pareto+students6"], "met": True}
    assert out["arms"]["tpe+pareto+students6"]["fraction_to_reach_random"] == [0.225, 0.25]


def test_peer_events_count_epochs_up_to_the_budget(tmp_path):
    b = _script("bench_search")
    events = tmp_path / "e.jsonl"
    lines = [
        {"trial": "a", "epoch": 1, "t": 1.0},
        {"trial": "b", "epoch": 1, "t": 1.5},
        {"trial": "a", "epoch": 2, "t": 2.0},
        {"trial": "a", "final": True, "t": 2.1, "accuracy": 0.9, "params": 1000, "params_searched": {"student.family": "cnn"}},  # complete after 3 epochs
        {"trial": "b", "epoch": 2, "t": 3.0},  # the budget's 4th and last epoch
        {"trial": "b", "epoch": 3, "t": 3.5},  # past the budget: not counted
        {"trial": "b", "final": True, "t": 4.0, "accuracy": 0.95, "params": 5000},  # ended past the budget: not counted
    ]
    events.write_text("\n".join(__import__("json").dumps(x) for x in lines) + "\n")
    done, info = b.events_to_done(events, 4, "params")
    assert done == [{"accuracy": 0.9, "params": 1000.0, "study_epochs": 3, "point": {"student.family": "cnn"}}]
    assert info == {"trials": {"COMPLETE": 1, "PRUNED": 1, "FAIL": 0}, "epochs_spent": 4}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_overhead_cpu_meter_counts_the_command_and_what_it_started():
    """A command that burns ~0.6 s of CPU itself and starts a child that burns ~0.9 s: both
    counted, each in its group, the child's although it exited before the command."""
    b = _script("bench_overhead")
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < {}: pass\n"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn.format(0.9) + 'print(time.time())'!r}], check=True)\n"
    proc, wall, cpu, meter = b._timed([sys.executable, "-c", child + burn.format(0.6)], None)
    assert proc.returncode == 0, proc.stderr
    assert 0.6 - b.CpuMeter.INTERVAL_S <= cpu["driver"] < 0.6 + 0.5 and 0.9 - b.CpuMeter.INTERVAL_S <= cpu["ray"] < 0.9 + 0.5, cpu
    assert cpu["trial workers"] == 0 and cpu["total"] == pytest.approx(cpu["driver"] + cpu["ray"]) and wall >= 1.5
    assert cpu["worker processes"] == 0
    # when the child ended, the command itself had only started it: the CPU up to then is the child's
    child_ended = float(proc.stdout.strip().splitlines()[-1])
    then = meter.before(child_ended)
    assert 0.9 - 2 * b.CpuMeter.INTERVAL_S <= then["ray"] <= cpu["ray"] and then["driver"] < 0.3 and then["total"] < cpu["total"], then
    assert meter.before(child_ended - 60)["total"] == 0
    # a Ray worker is started under python's name and renames itself: its CPU counts as a worker's
    renamed = "from ray._raylet import setproctitle\nsetproctitle('ray::ImplicitFunc.train')\n" + burn.format(0.9)
    proc, _, cpu, _ = b._timed([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {renamed!r}], check=True)"], None)
    assert proc.returncode == 0, proc.stderr
    assert cpu["trial workers"] >= 0.9 - b.CpuMeter.INTERVAL_S and cpu["driver"] < 0.5, cpu
    assert cpu["worker processes"] == 1


def test_shapes_are_ten_distinct_classes():
    import numpy as np

    b = _script("bench_search")
    images, labels = b.shapes(200, np.random.default_rng(0))
    assert images.shape == (200, 32, 32, 3) and images.dtype == np.uint8 and set(labels) == set(range(10))
    means = np.stack([images[labels == k].astype(float).mean(0) for k in range(10)])
    assert np.abs(means - means.mean(0)).max() > 10  # the classes differ in where the shape's pixels are


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("script", ["bench_search", "bench_trial", "bench_compress", "bench_kd_gain", "bench_text_kd", "bench_latency", "bench_layout"])
def test_benchmark_quick_runs(script):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{script}.py"), "--quick"], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "wrote" in run.stdout and "|---" in run.stdout


def test_search_keep_takes_earlier_studies_of_the_same_settings():
    import argparse

    b = _script("bench_search")
    settings = {"budget": 120, "epochs": 5, "quick": False}
    done = [{"accuracy": 0.5, "latency_ms": 0.2, "latency_ms_in_trial": 0.3, "study_epochs": 5, "point": {"student.family": "cnn"}}]
    earlier = [
        {"arm": "random", "seed": 0, "settings": settings, "done": done, "curve": [[5, 0.1]]},
        {"arm": "random", "seed": 1, "settings": {**settings, "budget": 60}, "done": done, "curve": [[5, 0.1]]},
        {"arm": "gp", "seed": 0, "settings": settings, "done": [{**done[0], "point": None}], "curve": [[5, 0.1]]},
    ]
    args = argparse.Namespace(earlier={"shapes": earlier})
    kept = b.earlier_run(args, "shapes", "random", 0, settings)
    assert kept["kept_from"] == "search.json" and kept["done"][0]["latency_ms"] == 0.3  # the in-trial figure, for the re-measure
    assert "latency_ms_in_trial" not in kept["done"][0] and earlier[0]["done"][0]["latency_ms"] == 0.2  # a copy
    assert b.earlier_run(args, "shapes", "random", 1, settings) is None  # another budget: run again
    assert b.earlier_run(args, "shapes", "gp", 0, settings) is None  # no searched values: nothing to re-measure
    assert b.earlier_run(args, "digits", "random", 0, settings) is None


def test_in_trial_latency_agreement_by_hand():
    b = _script("bench_search")

    def done(student, in_trial, alone):
        return {"point": {"student.width": student, "train.lr": in_trial}, "latency_ms_in_trial": in_trial, "latency_ms": alone}

    seed0 = [done(1, 1.0, 1.0), done(2, 2.2, 2.0), done(3, 2.7, 3.0), done(1, 1.25, 1.0)]  # student 1 twice: 1.0 and 1.25
    seed1 = [done(1, 3.0, 1.0), done(2, 2.0, 2.0), done(3, 1.0, 3.0)]  # ranked backwards
    out = b.in_trial_latency([{"done": seed0}, {"done": seed1}])
    assert out["spearman_per_seed"][0] == pytest.approx(1.0)  # ranks 0,2,3,1 both ways (the tie of 1.0 alone broken by order)
    assert out["spearman_per_seed"][1] == pytest.approx(-1.0)
    assert out["median_abs_log_ratio"] == pytest.approx(
        sorted(abs(math.log(a / b)) for a, b in [(1, 1), (2.2, 2), (2.7, 3), (1.25, 1), (3, 1), (2, 2), (1, 3)])[3]
    )
    assert out["same_student_max_over_min"] == pytest.approx(1.25)
    assert b.in_trial_latency([{"done": [{"point": {}, "params": 5}]}]) is None  # no latency objective
