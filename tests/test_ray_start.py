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

from autodistill._launch import PRELOAD, local_cpus
from autodistill.tasks import TASK_TYPES
from autodistill.tune.runner import _trials_on_started_workers


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


RELEASE_SCRIPT = """
import gc, json, time
import ray
from autodistill.tune import runner

ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
freed = []

class Frame:  # a cycle holding a Ray object, as a trial's traceback holds Ray Tune's frames
    def __init__(self, ref):
        self.self, self.ref = self, ref

    def __del__(self):
        freed.append(1)

for _ in range(200):  # garbage already
    Frame(ray.put(0))
refs = [ray.put(0) for _ in range(5000)]
gc.set_threshold(1)  # the collector runs after nearly every allocation
runner._release_ray()
freed_before_release = len(freed)
cycles = 0
while any(t.is_alive() for t in runner._releasing) and refs:  # the report is written meanwhile
    Frame(refs.pop())  # a cycle holding a Ray object becomes garbage while Ray goes down
    cycles += 1
    time.sleep(0.001)
runner.wait_ray_released()
gc.collect()
print(json.dumps({"freed_before_release": freed_before_release, "cycles": cycles, "freed": len(freed), "gc_enabled": gc.isenabled(), "ray_up": ray.is_initialized()}))
"""


@pytest.mark.integration
def test_no_ray_object_is_freed_while_ray_shuts_down_in_the_background():
    # Freeing an ObjectRef after ray.shutdown has torn the core worker down, but before it
    # detached it, ends the process with exit code 1 and no Python error: a study in
    # PostgreSQL (its outage left trials' tracebacks in cycles) ended so, its report
    # half-written. The garbage there is collected before the release, and the collector is
    # off until Ray is down (without that, this script ended so).
    result = subprocess.run([sys.executable, "-c", RELEASE_SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "already been shutdown" not in result.stderr
    done = json.loads(result.stdout.strip().splitlines()[-1])
    assert done["freed_before_release"] == 200, done
    assert done["cycles"] > 0 and done["freed"] == 200 + done["cycles"], done
    assert done["gc_enabled"] and not done["ray_up"], done


SHUTDOWN_SCRIPT = """
import json
import ray
import ray._private.node as node_module
from autodistill._launch import init_local_ray, shutdown_ray

init_local_ray((2, ()))
node = ray._private.worker._global_node
processes = {kind: [info.process for info in infos] for kind, infos in node.all_processes.items()}
alive_when_signalled = {}
kill = node_module.Node._kill_process_impl

def recorded(self, kind, **kwargs):
    alive_when_signalled[kind] = any(info.process.poll() is None for info in self.all_processes[kind])
    return kill(self, kind, **kwargs)

node_module.Node._kill_process_impl = recorded
shutdown_ray()
print(json.dumps({"alive_when_signalled": alive_when_signalled, "still_running": [k for k, ps in processes.items() if any(p.poll() is None for p in ps)]}))
"""


@pytest.mark.integration
def test_the_autoscaler_monitor_is_killed_before_ray_stops_the_rest():
    # Ray's SIGTERM reaches the monitor after the GCS is gone; it then tried to report to
    # the GCS and was killed after Ray's 1-s grace: a second of every study's exit
    result = subprocess.run([sys.executable, "-c", SHUTDOWN_SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    done = json.loads(result.stdout.strip().splitlines()[-1])
    alive = done["alive_when_signalled"]
    assert alive["monitor"] is False and alive["raylet"] and alive["gcs_server"], alive
    assert done["still_running"] == [], done


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

import autodistill.tune.runner as runner
order = []  # the report's imports warmed while the last trial runs, then the report
warm, finalize = runner.warm_report, runner.finalize
runner.warm_report = lambda: (order.append("warm"), warm())
runner.finalize = lambda *a, **k: (order.append("finalize"), finalize(*a, **k))[1]
autodistill.run_study(autodistill.load_config(sys.argv[1]), release_ray=True)
print(json.dumps({"made": made, "order": order}))
"""


@pytest.fixture(scope="module")
def two_trials(tmp_path_factory):
    """A real 2-trial study (2 at once) run by RACE_SCRIPT: what it recorded."""
    study = small_study(tmp_path_factory.mktemp("race"), **{"search.trials": 2})
    result = subprocess.run([sys.executable, "-c", RACE_SCRIPT, str(study)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.integration
def test_no_tune_searcher_or_scheduler_is_made_while_ray_starts(two_trials):
    # Their constructors add a usage tag to a dict that ray.init, in the start-up thread,
    # iterates unlocked: "RuntimeError: dictionary changed size during iteration" ended a
    # study in the test suite once. Here that iteration is held open for 5 s.
    made = two_trials["made"]
    assert {name for name, _ in made} == {"tag_searcher", "tag_scheduler"}
    assert all(after for _, after in made), made


@pytest.mark.integration
def test_the_report_imports_start_once_a_slot_stands_idle(two_trials):
    # Ray Tune asks the searcher for no trial beyond num_samples, so "no trial left" must be
    # seen when a trial ends after the last was handed out (it never was before: the report
    # imported scikit-learn and matplotlib after the last trial, seconds on a small machine)
    assert two_trials["order"] == ["warm", "finalize"]


KEPT_SCRIPT = """
import glob, json, os, re, sys, time
import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
import autodistill
from autodistill.tasks import get_task
from autodistill.tune.runner import _init_ray

config = autodistill.load_config(sys.argv[1])
_init_ray(config, type(get_task(config.task)).__module__)
logs = os.path.join(ray._private.worker.global_worker.node.get_session_dir_path(), "logs")
# as Ray Tune does: the trials' CPUs reserved first, their actors placed later (here 3 s later,
# as on a busy machine; Ray's own limit for an idle worker is 1 s)
groups = [placement_group([{"CPU": 1}]) for _ in range(2)]
ray.get([g.ready() for g in groups])
time.sleep(3)

@ray.remote(num_cpus=1)
class Trial:
    def pid(self):
        return os.getpid()

trials = [Trial.options(scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=g)).remote() for g in groups]
pids = ray.get([t.pid.remote() for t in trials])
# a worker's log is named worker-<id>-<job>-<pid>.err; those Ray started for no job yet are
# the ones started (and preloaded) with Ray itself
started_with_ray = [int(m.group(1)) for f in glob.glob(os.path.join(logs, "worker-*-ffffffff-*.err")) if (m := re.search(r"-(\\d+)\\.err$", f))]
print(json.dumps({"trial_pids": pids, "started_with_ray": started_with_ray, "workers": len(glob.glob(os.path.join(logs, "worker-*.err")))}))
"""


@pytest.mark.integration
def test_the_workers_started_with_ray_wait_for_the_trials_reserved_cpus(tmp_path):
    # Ray counts the workers it started (and preloaded) before the trials as idle ones beyond
    # its limit once the trials' CPUs are reserved, and kills those idle for 1 s: trials placed
    # later got new workers, which import torch again (in 5 of 13 default studies on a busy
    # 2-core machine). Without the fix this script ends with 4 workers, the trials on the new two.
    study = small_study(tmp_path, **{"search.trials": 2})
    result = subprocess.run([sys.executable, "-c", KEPT_SCRIPT, str(study)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(seen["started_with_ray"]) == 2 and set(seen["trial_pids"]) == set(seen["started_with_ray"]), seen
    assert seen["workers"] == 2, seen


STEAL_SCRIPT = """
import fcntl, json, os, sys, time
import ray
from ray import tune
from autodistill.tune.runner import _keep_starting_actors

first_worker = sys.argv[1]

class Trial(tune.Trainable):
    def setup(self, config):
        # the first worker process is ready at once; every later one takes 2 s to start, as a
        # new worker that imports torch on a busy machine does
        fd = os.open(first_worker, os.O_CREAT | os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.lock = fd  # held while this process lives
        except BlockingIOError:
            time.sleep(2.0)

    def step(self):
        started = time.time()
        time.sleep(1.0)
        return {"pid": os.getpid(), "started": started, "ended": time.time(), "done": True}

    def save_checkpoint(self, checkpoint_dir):
        return None

    def load_checkpoint(self, checkpoint):
        pass

    def reset_config(self, new_config):
        return True

if sys.argv[2] == "kept":
    _keep_starting_actors()
ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)  # a Ray of its own, even beside a cluster the suite started
results = tune.Tuner(
    Trial,
    param_space={"x": tune.uniform(0, 1)},
    tune_config=tune.TuneConfig(num_samples=8, max_concurrent_trials=2, reuse_actors=True),
    run_config=tune.RunConfig(storage_path=sys.argv[3], verbose=0),
).fit()
print(json.dumps([{k: r.metrics[k] for k in ("pid", "started", "ended")} for r in results]))
"""


@pytest.mark.integration
def test_a_trial_keeps_its_starting_actor_so_trials_run_side_by_side(tmp_path):
    # Ray Tune hands a trial whose own actor is still starting the actor of a trial that just
    # finished, and kills the starting one: when a worker takes longer to start than a trial
    # to train, every trial then runs on that one actor, one after another (Ray 2.60 does, in
    # this script, without the fix). With it, the second actor starts once and both are reused.
    command = [sys.executable, "-c", STEAL_SCRIPT, str(tmp_path / "first_worker"), "kept", str(tmp_path / "ray")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    trials = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(trials) == 8
    assert len({t["pid"] for t in trials}) == 2
    overlapping = sum(1 for a in trials for b in trials if a is not b and a["started"] < b["started"] < a["ended"])
    assert overlapping >= 2, trials  # trials of the two actors ran at the same time
