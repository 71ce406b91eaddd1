"""The trial function the peer arms of ``bench_search.py`` drive: the same one autodistill's
trials run (``Task.start_trial`` -> ``TrialRun.train`` -> ``TrialRun.finish``), called by a
plain Optuna loop or by Syne Tune's local backend instead of Ray Tune.

Also Syne Tune's entry point: ``python scripts/_search_trial.py --st_config_json_filename F``
(the backend writes F); the config holds the study file, its overrides, the events file and
the searched values. Each epoch is appended to the events file (one JSON line: trial, epoch,
time, the objectives), the budget's own record, and reported to Syne Tune.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COST_FROM_RUN = ("params", "macs", "size_mb")


def accept_synthetic_cifar() -> None:
    """The shapes are CIFAR-10's file format with other bytes: torchvision's md5 list cannot
    match them (as in bench_gpu.py and the data tests)."""
    import torchvision.datasets.cifar as tv_cifar

    tv_cifar.check_integrity = lambda path, md5=None: True


def load_problem(study_file: str, overrides: dict[str, Any], quiet: bool = True):
    """(config, task, data, targets, teacher record) of a study file: the teacher is loaded
    from the cache the benchmark's first study filled."""
    from autodistill.loading import load_config

    accept_synthetic_cifar()
    from autodistill.tasks import get_task

    config = load_config(study_file, overrides)
    task = get_task(config.task)
    data = task.load_data(config)
    log = (lambda m: None) if quiet else print
    teachers = task.prepare_teachers(config, data, log=log)
    targets = task.teacher_targets(config, data, teachers, log=log)
    return config, task, data, targets, teachers.primary


def active(config, values: dict[str, Any]) -> dict[str, Any]:
    """The searched values a trial uses: a dimension of another student family is dropped
    (a peer that knows no conditions samples every dimension)."""
    from autodistill.space import search_space

    out: dict[str, Any] = {}
    for dim in search_space(config):
        if dim.name not in values:
            continue
        if dim.condition is not None and values.get(dim.condition[0]) != dim.condition[1]:
            continue
        value = values[dim.name]
        if isinstance(value, float) and value.is_integer() and type(dim.dist).__name__ == "IntRange":
            value = int(value)
        out[dim.name] = value
    return out


def run_trial(config, task, data, targets, params: dict[str, Any], seed: int, on_epoch) -> dict[str, Any]:
    """Train one student; ``on_epoch(epoch, epochs, metrics)`` after each epoch with the
    objectives as known then (costs before training, latency measured before training when
    it is an objective) and may return True to stop the trial. Returns the final metrics,
    or {"stopped_at": epoch} when ``on_epoch`` stopped it."""
    from autodistill.space import resolve

    run = task.start_trial(resolve(config, params), config, data, targets, seed)
    base = dict(run.costs())
    if any(m in task.latency_metrics for m in config.objectives):
        base.update(run.latency())
    stopped: list[int] = []

    class Stop(Exception):
        pass

    def each(stats) -> None:
        metrics = {**base, **stats.as_dict()}
        if on_epoch(stats.epoch, run.epochs, metrics):
            stopped.append(stats.epoch)
            raise Stop

    try:
        history = run.train(each, None, None)
    except Stop:
        return {"stopped_at": stopped[0]}
    return {**base, **history[-1].as_dict(), **run.finish(history).metrics}


def append_event(path: str, event: dict[str, Any]) -> None:
    with open(path, "a") as fh:  # one short line per write: appends from several processes stay whole
        fh.write(json.dumps(event) + "\n")


def syne_tune_main() -> None:
    import argparse

    import torch
    from syne_tune import Reporter
    from syne_tune.utils import add_config_json_to_argparse, load_config_json

    parser = argparse.ArgumentParser()
    add_config_json_to_argparse(parser)
    args, _ = parser.parse_known_args()
    cfg = load_config_json(vars(args))
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    config, task, data, targets, _ = load_problem(cfg["bench_study_file"], json.loads(cfg["bench_overrides"]))
    params = active(config, {k: v for k, v in cfg.items() if not k.startswith(("bench_", "st_"))})
    reporter = Reporter()
    objectives = list(config.objectives)
    events = cfg["bench_events"]
    trial_key = f"{os.getpid()}-{time.time_ns()}"

    def minimised(metrics: dict[str, Any]) -> dict[str, float]:
        return {m: (-float(metrics[m]) if config.objectives[m] == "max" else float(metrics[m])) for m in objectives}

    last: dict[str, Any] = {}

    def on_epoch(epoch: int, epochs: int, metrics: dict[str, Any]) -> bool:
        append_event(events, {"trial": trial_key, "epoch": epoch, "epochs": epochs, "t": time.time(), **{m: metrics.get(m) for m in objectives}})
        if epoch < epochs:
            reporter(epoch=epoch, **minimised(metrics))
        else:
            last.update(metrics)
        return False

    seed = int(cfg["bench_seed"]) + os.getpid() % 10_000  # each trial its own training seed, as in a study
    final = run_trial(config, task, data, targets, params, seed, on_epoch)
    final = {m: final.get(m, last.get(m)) for m in objectives}
    if all(isinstance(v, (int, float)) and math.isfinite(v) for v in final.values()):
        append_event(events, {"trial": trial_key, "final": True, "t": time.time(), "params_searched": params, **final})
        reporter(epoch=int(config.train.epochs), **minimised(final))


if __name__ == "__main__":
    syne_tune_main()
