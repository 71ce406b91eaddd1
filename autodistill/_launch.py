"""The ``autodistill`` command's entry point, and the start of a local Ray before torch loads.

A study's first training step waits for Ray's trial workers, which import torch and the trial
code before they take a trial (:data:`PRELOAD`). Ray used to start once the study file was
parsed, and parsing it imports torch (the student families): seconds in which one core idled.
So for ``autodistill search FILE``, :func:`main` reads the few fields that decide how Ray
starts (``task``, ``search.trials``, ``search.max_concurrent``, ``search.resources``,
``execution.address`` and the matching flags) from the YAML itself and starts a local Ray in a
background thread (:class:`RayStart`) before it imports anything heavy. The study takes that
Ray when it is the one it would have started (:func:`take_early`); otherwise (a guess that
does not hold, a study that needs no Ray, an error) it is shut down. Nothing here decides
anything about the study: the parsed config does.

This module imports only the standard library and PyYAML (and Ray, to start it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

PRELOAD = [
    "torch",
    "torch._dynamo",  # the first optimizer and the first MAC count import it: seconds, in the first trial
    "ray.tune.trainable.function_trainable",  # Tune's trial actor
    "autodistill.tune.trainable",
]
"""what a local Ray's workers import before they take a trial (with the study's task module)"""

DEFAULTS = {"trials": 20, "max_concurrent": 2, "cpu": 1.0, "task": "image_classification"}
"""the study file's defaults for the fields read before it is parsed (``tests/test_launch.py``
checks them against :class:`autodistill.config.SearchConfig`)"""

_FLAGS_WITH_VALUES = ("--trials", "--time-budget", "--epoch-budget", "--max-concurrent", "--results", "--name", "--address")


def main() -> None:
    """``autodistill``: start Ray early for ``search`` (:func:`start_early`), then the CLI."""
    if len(sys.argv) > 1 and sys.argv[1] == "search":
        start_early(sys.argv[2:])
    from .cli import main as cli_main

    cli_main()


def local_cpus(max_concurrent: int, trials: int, cpu: float) -> int:
    """CPUs of a local Ray: what the trials can use at once, at most the machine's. Ray
    starts one worker per CPU up front; more would only import torch for nothing."""
    return min(os.cpu_count() or 1, max(1, math.ceil(min(max_concurrent, trials) * cpu)))


def local_ray_key(max_concurrent: int, trials: int, cpu: float, task_module: str) -> tuple:
    """What tells two local Rays apart: their CPUs and what their workers preload."""
    return (local_cpus(max_concurrent, trials, cpu), (*PRELOAD, task_module))


def init_local_ray(key: tuple) -> None:
    """Start a new local Ray of our own (even when ``ray start`` runs a cluster on this
    machine) with ``key``'s CPUs, whose workers import ``key``'s modules before they take a
    trial (Ray's ``preload_python_modules``)."""
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    num_cpus, preload = key
    ray.init(
        address="local",
        include_dashboard=False,
        num_cpus=num_cpus,
        _system_config={"preload_python_modules": list(preload)},
        logging_level=logging.ERROR,
        log_to_driver=False,
    )


class RayStart:
    """Ray started by ``start`` in a background thread while the driver does other work (a
    local Ray's workers import :data:`PRELOAD` meanwhile). :meth:`wait` returns once Ray is
    up, or raises what starting it raised. ``key``: which local Ray it is (:func:`local_ray_key`).

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

    def settle(self) -> None:
        """Wait until Ray is up or has failed, raising nothing (on the way out of an error)."""
        self._ready.wait()


_early: list[RayStart] = []


def start_early(args: list[str]) -> None:
    """Start the local Ray that ``autodistill search <args>`` will want, if the study file
    says clearly which one (:func:`early_key`); otherwise do nothing."""
    key = None
    with contextlib.suppress(Exception):  # anything unclear: the study starts its own Ray, as before
        key = early_key(args)
    if key is None:
        return
    import ray  # before torch: its import must not wait behind torch's in the other thread

    if not ray.is_initialized():
        _early.append(RayStart(lambda: init_local_ray(key), key))


def early_key(args: list[str]) -> tuple | None:
    """The :func:`local_ray_key` of the study ``autodistill search <args>`` would run, read
    from the YAML and the flags without parsing the study; ``None`` when it asks for no local
    Ray (a cluster address, GPUs) or anything is unclear (a missing file, a value of a wrong
    type, ``--help``)."""
    import yaml

    flags: dict[str, str] = {}
    positional: list[str] = []
    it = iter(args)
    for arg in it:
        if arg in ("--help", "-h"):
            return None
        name, eq, value = arg.partition("=")
        if name in _FLAGS_WITH_VALUES:
            flags[name] = value if eq else next(it)
        elif arg.startswith("-"):
            return None  # a flag this does not know: leave it to the CLI
        else:
            positional.append(arg)
    if len(positional) != 1 or "--address" in flags:
        return None
    with open(positional[0], encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    search = _section(raw, "search")
    resources = _section(search, "resources")
    if _section(raw, "execution").get("address") or resources.get("gpu"):
        return None
    trials = int(flags.get("--trials", search.get("trials", DEFAULTS["trials"])))
    max_concurrent = int(flags.get("--max-concurrent", search.get("max_concurrent", DEFAULTS["max_concurrent"])))
    cpu = float(resources.get("cpu", DEFAULTS["cpu"]))
    task = raw.get("task", DEFAULTS["task"])
    if not isinstance(task, str) or not task.isidentifier() or trials < 1 or max_concurrent < 1 or cpu <= 0:
        return None
    return local_ray_key(max_concurrent, trials, cpu, f"autodistill.tasks.{task}")


def _section(raw: Any, name: str) -> dict:
    value = raw.get(name) if isinstance(raw, dict) else None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(name)
    return value


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


def stop_early() -> None:
    """Shut down a Ray started early that no study took (the command ended before, or with
    an error)."""
    while _early:
        _stop(_early.pop())


def _stop(early: RayStart) -> None:
    early.settle()
    import ray

    if ray.is_initialized():
        ray.shutdown()
