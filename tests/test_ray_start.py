"""How a local Ray is started for a study: as many CPUs as the trials use at once, workers
that import the trial code before they take a trial, and Tune's trial actors placed on those
workers (a real study checks the whole path: tests/test_e2e.py)."""

import importlib
import json
import os
import subprocess
import sys

import pytest
from helpers import small_study

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


RACE_SCRIPT = """
import json, sys, threading, time
import ray._common.usage.usage_lib as usage_lib
import ray.tune.schedulers.trial_scheduler as scheduler_module
import ray.tune.search.searcher as searcher_module
import autodistill

hooks_done = threading.Event()
put_tags = usage_lib._put_pre_init_extra_usage_tags

def slow_put_tags():  # ray.init iterates its usage tags without their lock: held open for 5 s
    time.sleep(5)
    put_tags()
    hooks_done.set()

usage_lib._put_pre_init_extra_usage_tags = slow_put_tags
made = []
for module, name in ((searcher_module, "tag_searcher"), (scheduler_module, "tag_scheduler")):
    def tag(obj, real=getattr(module, name), name=name):
        made.append([name, hooks_done.is_set()])
        return real(obj)
    setattr(module, name, tag)
autodistill.run_study(autodistill.load_config(sys.argv[1]), release_ray=True)
print(json.dumps(made))
"""


@pytest.mark.integration
def test_no_tune_searcher_or_scheduler_is_made_while_ray_starts(tmp_path):
    # Their constructors add a usage tag to a dict that ray.init, in the start-up thread,
    # iterates unlocked: "RuntimeError: dictionary changed size during iteration" ended a
    # study in the test suite once. Here that iteration is held open for 5 s.
    study = small_study(tmp_path, **{"search.trials": 2})
    result = subprocess.run([sys.executable, "-c", RACE_SCRIPT, str(study)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    made = json.loads(result.stdout.strip().splitlines()[-1])
    assert {name for name, _ in made} == {"tag_searcher", "tag_scheduler"}
    assert all(after for _, after in made), made
