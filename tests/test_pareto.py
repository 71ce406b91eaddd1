import itertools

import numpy as np
import pytest

from autodistill.pareto import as_minimization, hypervolume, non_dominated_mask, non_dominated_ranks


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """a dominates b: no worse in every objective and better in at least one."""
    return bool(np.all(a <= b) and np.any(a < b))


def brute_front(points):
    return np.array([not any(dominates(q, p) for j, q in enumerate(points) if j != i) for i, p in enumerate(points)])


def brute_hypervolume(points, ref):
    """Count the unit cells of an integer grid that some point dominates."""
    count = 0
    for cell in itertools.product(*(range(0, r) for r in ref)):
        corner = np.array(cell)  # cell [c, c+1): dominated if some point <= c in every objective
        if any(np.all(p <= corner) for p in points):
            count += 1
    return count


@pytest.mark.parametrize("dims", [2, 3, 4])
@pytest.mark.parametrize("seed", range(5))
def test_front_and_hypervolume_match_brute_force(dims, seed):
    rng = np.random.default_rng(seed)
    points = rng.integers(0, 6, size=(12, dims)).astype(float)
    assert np.array_equal(non_dominated_mask(points), brute_front(points))
    ref = [6] * dims
    assert hypervolume(points, ref) == pytest.approx(brute_hypervolume(points, ref))


def brute_ranks(points):
    ranks, remaining, rank = np.full(len(points), -1), np.arange(len(points)), 0
    while len(remaining):
        front = brute_front(points[remaining])
        ranks[remaining[front]] = rank
        remaining, rank = remaining[~front], rank + 1
    return ranks


@pytest.mark.parametrize("dims", [2, 3, 5, 6])
@pytest.mark.parametrize("seed", range(3))
def test_ranks_and_many_objectives_match_brute_force(dims, seed):
    """Ranks by repeated peeling; 5 and 6 objectives, where slicing is exponential."""
    rng = np.random.default_rng(100 + seed)
    points = rng.integers(0, 4, size=(20, dims)).astype(float)
    assert np.array_equal(non_dominated_ranks(points), brute_ranks(points))
    ref = [4] * dims
    assert hypervolume(points, ref) == pytest.approx(brute_hypervolume(points, ref))


def test_hypervolume_known_values():
    assert hypervolume(np.array([[1.0, 1.0]]), [2, 2]) == pytest.approx(1.0)
    assert hypervolume(np.array([[0.0, 1.0], [1.0, 0.0]]), [2, 2]) == pytest.approx(3.0)
    assert hypervolume(np.array([[3.0, 3.0]]), [2, 2]) == 0.0  # beyond the reference
    assert hypervolume(np.empty((0, 2)), [2, 2]) == 0.0


def test_duplicates_stay_on_the_front_and_ranks():
    points = np.array([[1, 2], [1, 2], [2, 1], [2, 2], [3, 3]], dtype=float)
    assert non_dominated_mask(points).tolist() == [True, True, True, False, False]
    assert non_dominated_ranks(points).tolist() == [0, 0, 0, 1, 2]


def test_as_minimization_negates_maximised():
    values = np.array([[0.9, 100.0]])
    assert as_minimization(values, ["max", "min"]).tolist() == [[-0.9, 100.0]]


def test_normalized_hypervolume_in_teacher_units():
    import pandas as pd

    from autodistill.results import normalized_hypervolume

    objectives = {"accuracy": "max", "params": "min"}
    teacher = {"accuracy": 0.99, "params": 1000}
    # error 0.1 at half the teacher's params: box (1 - 0.1) x (2 - 0.5) of the 1 x 2 reference box
    frame = pd.DataFrame({"accuracy": [0.9], "params": [500]})
    assert normalized_hypervolume(frame, objectives, teacher) == pytest.approx(0.9 * 1.5 / 2)
    # more than twice the teacher's cost adds nothing
    frame = pd.DataFrame({"accuracy": [0.9], "params": [2500]})
    assert normalized_hypervolume(frame, objectives, teacher) == 0.0


def test_knee_is_the_point_closest_to_the_ideal_after_rescaling():
    from autodistill.pareto import knee_index

    # error vs params: the corner (0.02, 2000) balances both; the extremes do not
    front = np.array([[0.01, 50_000], [0.02, 2_000], [0.10, 1_000], [0.30, 500]])
    assert knee_index(front) == 1
    # rescaling makes units irrelevant
    assert knee_index(front * np.array([100.0, 1e-3])) == 1
    # a constant objective is ignored; one point is its own knee
    assert knee_index(np.array([[0.1, 5.0], [0.2, 5.0]])) == 0
    assert knee_index(np.array([[3.0, 4.0]])) == 0
    with pytest.raises(ValueError):
        knee_index(np.empty((0, 2)))


def test_export_knee_is_taken_on_the_recorded_front():
    """Front members carry latency re-measured alone, the others their in-search figure: C
    (dominated by B during the search) looks non-dominated once B's latency is re-measured
    higher. The knee is picked on the recorded front, as the study reported it."""
    import pandas as pd

    from autodistill.export import pick_trial

    objectives = {"accuracy": "max", "latency_ms": "min"}
    complete = pd.DataFrame(
        {
            "number": [0, 1, 2],  # A, B, C
            "accuracy": [0.95, 0.90, 0.89],
            "latency_ms": [1.0, 0.8, 0.7],  # B re-measured (0.5 during the search); C in-search
            "params": [100, 50, 40],
            "on_front": [True, True, False],
        }
    )
    assert int(pick_trial(complete, objectives, "knee")["number"]) == 0
    assert int(pick_trial(complete.drop(columns="on_front"), objectives, "knee")["number"]) == 1  # the mixed figures' front differs
    # limits that leave no front member: the front of the trials that meet them
    assert int(pick_trial(complete, objectives, "knee", max_latency_ms=0.75)["number"]) == 2


def test_export_pick_params_latency_and_a_number():
    import pandas as pd

    from autodistill import AutodistillError
    from autodistill.export import pick_trial

    objectives = {"accuracy": "max", "params": "min", "latency_ms": "min"}
    complete = pd.DataFrame(
        {
            "number": [0, 1, 2, 3],
            "accuracy": [0.95, 0.90, 0.92, 0.80],
            "params": [100, 40, 40, 60],  # 1 and 2 tie on params: the more accurate wins
            "latency_ms": [1.0, 0.6, 0.7, 0.5],
        }
    )
    assert int(pick_trial(complete, objectives, "params")["number"]) == 2
    assert int(pick_trial(complete, objectives, "latency")["number"]) == 3
    assert int(pick_trial(complete, objectives, "latency", min_accuracy=0.85)["number"]) == 1
    assert int(pick_trial(complete, objectives, "params", max_latency_ms=0.65)["number"]) == 1
    assert int(pick_trial(complete, objectives, "1")["number"]) == 1
    with pytest.raises(AutodistillError, match="--pick: unknown rule 'fastest'"):
        pick_trial(complete, objectives, "fastest")


def test_front_members_with_the_same_network_share_one_re_measurement(tmp_path):
    """Two trials that trained the same network (different weights) differ in latency only by
    noise: the final re-measurement times the network once and gives both the figure, so the
    less accurate copy, on the front during the search for a luckier draw, leaves it (and the
    log names it). A different network is timed on its own."""
    import json

    import pandas as pd
    import torch

    from autodistill import _io, layout
    from autodistill.compress import build_network
    from autodistill.config import LatencyConfig
    from autodistill.results import _remeasured_front
    from autodistill.tasks import get_task

    def trial(number: int, width_mult: float, seed: int):
        spec = {
            "family": "cnn",
            "dims": {"widths": [8, 16], "depths": [1, 1], "width_mult": width_mult, "dropout": 0.0},
            "in_channels": 1,
            "num_classes": 10,
            "image_size": 8,
        }
        torch.manual_seed(seed)
        folder = layout.trial_dir(tmp_path, number)
        _io.torch_save(folder / layout.STUDENT, build_network(spec).state_dict())
        _io.write_json(folder / layout.SPEC, {"spec": spec, "number": number, "params": {}})

    trial(0, 1.0, seed=0)
    trial(1, 1.0, seed=1)  # trial 0's network, other weights
    trial(2, 0.5, seed=2)
    front = pd.DataFrame(
        {
            "number": [0, 1, 2],
            "accuracy": [0.95, 0.90, 0.85],
            "params": [3000, 3000, 900],
            "latency_ms": [0.30, 0.25, 0.20],  # in-trial: trial 1 looked faster than trial 0
        }
    )
    task = get_task("image_classification")
    timed = []
    real = task.measure_latency

    def counting(model, spec, latency, repeats):
        timed.append(json.dumps(spec["dims"], sort_keys=True))
        return real(model, spec, latency, repeats)

    task.measure_latency = counting  # the real measurement, counted
    try:
        lines: list[str] = []
        config = type(
            "Config", (), {"objectives": {"accuracy": "max", "params": "min", "latency_ms": "min"}, "latency": LatencyConfig(warmup=2, final_repeats=20)}
        )
        kept = _remeasured_front(front, front, tmp_path, config, task, lines.append)
    finally:
        del task.measure_latency
    assert len(timed) == 2 and len(set(timed)) == 2  # one per network
    assert list(kept["number"]) == [0, 2]
    assert any("2 distinct networks, each measured once" in line for line in lines)
    assert any(line.startswith("left the front once re-measured") and line.endswith("trial(s) 1") for line in lines)
    for column in ("latency_ms", "latency_ms_p10", "latency_ms_p90"):
        assert column in kept.columns
    assert float(kept.loc[kept["number"] == 0, "latency_ms_in_trial"].iloc[0]) == 0.30
