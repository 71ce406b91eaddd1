"""How a local Ray is started for a study: as many CPUs as the trials use at once, workers
that import the trial code before they take a trial, and Tune's trial actors placed on those
workers (a real study checks the whole path: tests/test_e2e.py)."""

import importlib
import os

import pytest

from autodistill.tasks import TASK_TYPES
from autodistill.tune.runner import PRELOAD, _trials_on_started_workers, local_cpus


@pytest.mark.parametrize(
    ("concurrent", "trials", "cpu", "expected"), [(2, 24, 1.0, 2), (4, 2, 1.0, 2), (1, 5, 0.5, 1), (3, 10, 0.5, 2), (10_000, 10_000, 1.0, os.cpu_count())]
)
def test_a_local_ray_has_the_cpus_the_trials_use_at_once(concurrent, trials, cpu, expected):
    assert local_cpus(concurrent, trials, cpu) == min(expected, os.cpu_count())


def test_every_preloaded_module_imports():
    # Ray logs and skips a module that fails to import: a typo would only make trials slow
    for name in [*PRELOAD, *(cls.__module__ for cls in TASK_TYPES.values())]:
        importlib.import_module(name)


def test_tune_actors_ask_for_no_runtime_env_of_their_own():
    from ray.tune.execution.class_cache import _ActorClassCache

    _trials_on_started_workers()

    class Trainable:
        pass

    remote = _ActorClassCache().get(Trainable)
    # an actor whose runtime_env differs from the job's gets a new worker, not one of the
    # workers Ray started (and preloaded) beforehand
    assert remote._default_options.get("runtime_env", {}).get("env_vars") in ({}, None)
