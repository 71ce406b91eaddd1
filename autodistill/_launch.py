"""How a study's local Ray starts, and the start of that Ray before torch loads, for
``autodistill search``.

A study's first training step waits for Ray's trial workers, which import torch and the trial
code before they take a trial (:data:`PRELOAD`), while the driver imports torch and loads the
data and the teacher. Started after the driver's own imports, Ray left one core of a small
machine idle for seconds. So for ``autodistill search FILE`` the command
(:mod:`autodistill._command`) first reads and validates the study file (the config models
import no torch) and starts the local Ray the study will want in a background thread
(:class:`RayStart`), before torch loads. The study takes that Ray when it is the one it
would have started (:func:`take_early`, by :func:`study_ray_key`); otherwise (a study that
stops before its search, an error found later) it is shut down. A file with a mistake starts
no Ray: the command reports the mistake as before.

This module imports the standard library, PyYAML and the config models (and Ray, to start it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Callable

import yaml

from .config import StudyBase, parse_config, set_overrides
from .layout import study_db

PRELOAD = [
    "torch",
    "torch._dynamo",  # every optimizer step and the first MAC count import it: seconds, in the first trial
    "ray.tune.trainable.function_trainable",  # Tune's trial actor
    "autodistill.tune.trainable",
]
"""what a local Ray's workers import before they take a trial (with the study's task module)"""

IDLE_WORKER_KEPT_MS = 600_000
"""how long a local Ray keeps an idle worker it could kill (Ray's default: 1 s). Once Ray Tune
has reserved the trials' CPUs (their placement groups), Ray counts the workers it started and
preloaded beforehand as idle ones beyond its limit, and kills those idle for a second: when the
trials' actors come later than that (a busy 2-core machine: in a third to a half of default
studies), they get new workers that import torch again (seconds, and the CPU of two more
imports before the first step). Only those workers are idle in a study (trial actors keep
theirs), so keeping them costs nothing."""

SEARCH_FLAGS = {
    "--trials": "search.trials",
    "--time-budget": "search.time_budget_s",
    "--epoch-budget": "search.epoch_budget",
    "--max-concurrent": "search.max_concurrent",
    "--results": "execution.results",
    "--name": "name",
    "--address": "execution.address",
}
"""``autodistill search``'s flags and the study file's keys they set"""

_GLOBAL_FLAGS = ("--debug",)


def local_cpus(max_concurrent: int, trials: int, cpu: float) -> int:
    """CPUs of a local Ray: what the trials can use at once, at most the machine's. Ray
    starts one worker per CPU up front; more would only import torch for nothing."""
    return min(os.cpu_count() or 1, max(1, math.ceil(min(max_concurrent, trials) * cpu)))


def task_module(task: str) -> str:
    """The module of the task called ``task`` (what its trial workers preload)."""
    return f"autodistill.tasks.{task}"


def local_ray_key(max_concurrent: int, trials: int, cpu: float, module: str) -> tuple:
    """What tells two local Rays of a study apart: their CPUs and what their workers preload."""
    return (local_cpus(max_concurrent, trials, cpu), (*PRELOAD, module))


def study_ray_key(config: StudyBase, module: str) -> tuple | None:
    """The :func:`local_ray_key` of the Ray a study starts (``module``: its task's), or
    ``None`` when it starts none of its own (it joins a cluster: ``execution.address``)."""
    search = config.search
    if config.execution.address:
        return None
    return local_ray_key(search.max_concurrent, search.trials, search.resources.cpu, module)


def init_local_ray(key: tuple) -> None:
    """Start a new local Ray of our own (even when ``ray start`` runs a cluster on this
    machine) with ``key``'s CPUs, whose workers import ``key``'s modules before they take a
    trial (Ray's ``preload_python_modules``) and are not killed as idle meanwhile
    (:data:`IDLE_WORKER_KEPT_MS`)."""
    import ray

    quiet_ray_settings()
    num_cpus, preload = key
    ray.init(
        address="local",
        include_dashboard=False,
        num_cpus=num_cpus,
        _system_config={"preload_python_modules": list(preload), "idle_worker_killing_time_threshold_ms": IDLE_WORKER_KEPT_MS},
        logging_level=logging.ERROR,
        log_to_driver=False,
    )


def quiet_ray_settings() -> None:
    """Ray Tune's settings for a study, read from the environment: its older progress
    output (the study prints its own) and no strict check of the metric names."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")


class RayStart:
    """Ray started by ``start`` in a background thread while the driver does other work (a
    local Ray's workers import :data:`PRELOAD` meanwhile). :meth:`wait` returns once Ray is
    up, or raises what starting it raised. ``key``: which local Ray it is (:func:`local_ray_key`;
    None for a cluster's).

    No Ray Tune searcher or scheduler may be made while it starts: their constructors record
    a usage tag in a dict of Ray's that ``ray.init`` iterates without its lock (``RuntimeError:
    dictionary changed size during iteration``, seen once in the test suite); the driver
    waits for it first.

    The thread stays parked until the process ends: Ray starts its processes (GCS, raylet)
    with PR_SET_PDEATHSIG, which kills them when the *thread* that started them ends."""

    def __init__(self, start: Callable[[], None], key: tuple | None = None):
        self.key = key
        self._start = start
        self._error: BaseException | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._run, name="autodistill-ray-start", daemon=True).start()

    def _run(self) -> None:
        try:
            self._start()
        except BaseException as err:  # raised in the driver's thread by wait()
            self._error = err
        finally:
            self._ready.set()
        threading.Event().wait()  # parked: Ray's processes live as long as this thread

    def wait(self) -> None:
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def settle(self, timeout_s: float | None = None) -> bool:
        """Wait until Ray is up or has failed, raising nothing (on the way out of an error);
        with ``timeout_s``, at most that long. Whether it is settled."""
        return self._ready.wait(timeout_s)


_early: list[RayStart] = []


def start_early(args: list[str]) -> None:
    """For ``autodistill <args>``: when it is ``search`` of a study file that says clearly
    which local Ray it wants (:func:`early_key`), start that Ray now; otherwise do nothing."""
    key = None
    with contextlib.suppress(Exception):  # anything unclear or wrong: the study starts its own Ray, as before
        key = early_key(args)
    if key is None:
        return
    import ray  # before torch: its import must not wait behind torch's in the other thread

    if not ray.is_initialized() and not _early:
        _early.append(RayStart(lambda: init_local_ray(key), key))


def early_key(args: list[str]) -> tuple | None:
    """The :func:`study_ray_key` of the study that ``autodistill <args>`` runs: for ``search``
    of a study file that reads and validates (the flags applied); ``None`` for another
    command, ``--help``, a flag this does not know, a file with a mistake, a study that joins a
    cluster or trains on GPUs, or a results folder that holds a study of that name already (the
    CLI says what is wrong without a Ray to stop first; a study that does run then starts its
    own Ray, as before)."""
    args = list(args)
    while args and args[0] in _GLOBAL_FLAGS:
        args.pop(0)
    if not args or args[0] != "search":
        return None
    overrides: dict[str, str] = {}
    positional: list[str] = []
    it = iter(args[1:])
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in SEARCH_FLAGS:
            overrides[SEARCH_FLAGS[name]] = value if eq else next(it)
        elif arg.startswith("-"):
            return None  # --help, or a flag this does not know: leave it to the CLI
        else:
            positional.append(arg)
    if len(positional) != 1:
        return None
    with open(positional[0], encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    if not isinstance(raw, dict):
        return None
    set_overrides(raw, overrides)
    config = parse_config(raw, positional[0])
    if config.search.resources.gpu > 0:
        return None  # left to start its own Ray, as before (it needs CUDA, which the study checks)
    if study_db(config.results_dir).exists():
        return None  # most likely the study exists and the command refuses it: no Ray to stop first
    return study_ray_key(config, task_module(config.task))


def take_early(key: tuple | None) -> RayStart | None:
    """The Ray started early, when it is the one a study wants (``key``; ``None``: a study
    that wants no local Ray of its own); a different one is shut down first."""
    if not _early:
        return None
    early = _early.pop()
    if key is not None and early.key == key:
        return early
    _stop(early)
    return None


def stop_early(settle_s: float | None = None) -> None:
    """Shut down a Ray started early that no study took (the command ended before its
    search, or with an error); one still starting after ``settle_s`` is left to end with the
    process (its GCS and raylet die with the thread that started them)."""
    while _early:
        _stop(_early.pop(), settle_s)


def _stop(early: RayStart, settle_s: float | None = None) -> None:
    if not early.settle(settle_s):
        return
    import ray

    if ray.is_initialized():
        shutdown_ray()


def _local_node():
    """The Ray node this process started (``ray.init`` of a local Ray), else None (none
    started, or this process joined a cluster)."""
    from ray._private import worker

    node = getattr(worker, "_global_node", None)
    return node if node is not None and node.is_head() else None


def local_ray_stopped() -> bool:
    """Whether the local Ray this process started was signalled from outside: a SIGTERM to the
    whole process group (``timeout``, ``systemctl stop``, a container's stop). Its dashboard
    and log monitor exit at once then; its GCS and raylet take ~10 s, and Ray Tune's run
    waits for them meanwhile. Any of the four gone means it."""
    node = _local_node()
    return node is not None and _signalled(node)


def _signalled(node) -> bool:
    from ray._private import ray_constants as rc

    kinds = (rc.PROCESS_TYPE_GCS_SERVER, rc.PROCESS_TYPE_RAYLET, rc.PROCESS_TYPE_DASHBOARD, rc.PROCESS_TYPE_LOG_MONITOR)
    return any(info.process.poll() is not None for kind in kinds for info in node.all_processes.get(kind, []))


def shutdown_ray() -> None:
    """``ray.shutdown()``, with a local Ray's autoscaler monitor killed first. That monitor
    (it scales nothing on one machine) answers SIGTERM by reporting to the GCS, which
    ``ray.shutdown`` has stopped just before: it then waits out Ray's 1-s grace for each
    process before Ray kills it, a second of every study's exit.

    Where the local Ray was signalled from outside (:func:`local_ray_stopped`), ``ray.shutdown``
    would wait 3 s for its GCS and then abort this process (SIGABRT, after the study's own
    last line): what is left of that Ray is killed instead, and the core worker left as it is
    (the command is ending)."""
    import ray
    from ray._private import ray_constants

    node = _local_node()
    if node is not None and _signalled(node):
        node.kill_all_processes(check_alive=False, allow_graceful=False)
        return
    if node is not None:
        for info in node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []):
            with contextlib.suppress(OSError):
                info.process.kill()
                info.process.wait(timeout=5)
    ray.shutdown()
