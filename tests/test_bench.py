"""The benchmark scripts' own arithmetic (hypervolume in the search benchmark's box, the
compute needed to reach a level), and the scripts' smoke runs (slow)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script(name):
    sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_search_hypervolume_by_hand():
    b = _script("bench_search")
    # box: error 0..0.2 x log10(params) 3..6 (teacher 1e6); area 0.2 * 3
    assert b.hypervolume([(0.9, 1000)], 1e6) == pytest.approx(0.1 * 3 / 0.6)  # error 0.1, the smallest size: half the box
    assert b.hypervolume([(0.9, 10**4.5)], 1e6) == pytest.approx(0.1 * 1.5 / 0.6)
    two = [(0.9, 1000), (0.95, 10**4.5)]  # an L-shape: 0.1*3 + 0.05*1.5
    assert b.hypervolume(two, 1e6) == pytest.approx((0.1 * 3 + 0.05 * 1.5) / 0.6)
    assert b.hypervolume([(0.7, 1000), (0.9, 2e6)], 1e6) == 0.0  # outside the box adds nothing
    assert b.hypervolume([(1.0, 10)], 1e6) == pytest.approx(1.0)  # perfect and tinier than the box: clipped to it


def test_curve_and_compute_to_reach():
    b = _script("bench_search")
    trials = pd.DataFrame(
        {
            "state": ["COMPLETE", "PRUNED", "COMPLETE", "COMPLETE"],
            "accuracy": [0.9, 0.99, 0.95, 0.85],
            "params": [1000, 10, 10**4.5, 1000],
            "study_epochs": [15, 20, 40, 55],
        }
    )
    curve = b.hv_curve(trials, 1e6)
    assert [e for e, _ in curve] == [15, 40, 55]  # the pruned trial never counts
    assert curve[0][1] == pytest.approx(0.5) and curve[1][1] == pytest.approx((0.3 + 0.075) / 0.6) and curve[2][1] == curve[1][1]
    assert b.hv_at(curve, 10) == 0.0 and b.hv_at(curve, 39) == pytest.approx(0.5) and b.hv_at(curve, 400) == curve[-1][1]
    assert b.epochs_to_reach(curve, 0.6) == 40 and b.epochs_to_reach(curve, 0.7) is None


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("script", ["bench_search", "bench_trial", "bench_compress", "bench_kd_gain", "bench_text_kd"])
def test_benchmark_quick_runs(script):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{script}.py"), "--quick"], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "wrote" in run.stdout and "|---" in run.stdout
