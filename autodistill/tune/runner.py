"""Assembly of a study: data, teacher, teacher outputs, the Optuna study, the Ray Tune
``Tuner``, and the results at the end."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import platform
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from ray.tune import Stopper

from .. import _io, layout
from .._errors import AutodistillError, DiskFull, StorageUnavailable, StudyInterrupted, interrupted_line
from .._launch import RayStart, init_local_ray, local_ray_stopped, quiet_ray_settings, shutdown_ray, stop_early, study_ray_key, take_early
from .._lock import StudyLock
from .._storage import end_write_ahead
from ..config import StudyConfig
from ..loading import check_paths, dump_config
from ..measure import clock_key, clock_reference_ms, peak_rss_mb, set_clock_reference
from ..results import finalize, load_front, open_study, rdb_storage, storage_url, trials_frame, warm_report
from ..space import check_points, search_space
from ..tasks import Task, get_task
from .prescreen import EPOCHS_ATTR as PRESCREEN_EPOCHS
from .progress import StudyProgress
from .resume import describe, recover
from .schedulers import make_scheduler
from .searcher import OptunaSearcher
from .startup import DESIGN_ATTR as STARTUP_DESIGN
from .trainable import run_trial, sweep_stale_checkpoints


@dataclass
class StudyResult:
    results_dir: Path
    summary: dict[str, Any]
    trials: pd.DataFrame
    front: pd.DataFrame
    wall_s: float


def startup_trials(config: StudyConfig) -> int:
    """How many trials TPE and GP sample at random before they model the results:
    ``search.startup_trials`` if set, else a third of the expected trials, 4 to 10. With an
    epoch budget, expect as many trials as it holds at full length rather than search.trials,
    which may be far off."""
    if config.search.startup_trials is not None:
        return config.search.startup_trials
    expected = config.search.trials
    if config.search.epoch_budget:
        expected = min(expected, max(1, config.search.epoch_budget // max_epochs(config)))
    return min(10, max(4, expected // 3))


def make_sampler(config: StudyConfig, offset: int = 0):
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    seed = config.search.seed + offset
    startup = startup_trials(config)
    if config.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if config.search.sampler == "gp":
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # "greenlet unavailable" is not the user's concern
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    # multivariate TPE models dimensions jointly; the constant liar keeps parallel
    # trials from being sampled at the same point while earlier ones still run.
    # the samplers read each trial's constraint values, which the searcher stores (Trial.set_constraint)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=startup)


def _init_ray(config: StudyConfig, task_module: str) -> None:
    """Start a local Ray (or connect to ``execution.address``), unless an earlier study of
    this process did. A local Ray gets as many CPUs as the trials can use at once, and its
    workers import torch and the trial code before they take a trial
    (:func:`autodistill._launch.init_local_ray`)."""
    import ray

    if ray.is_initialized():
        return
    if config.execution.address:
        quiet_ray_settings()
        ray.init(address=config.execution.address, logging_level=logging.ERROR, log_to_driver=False)
    else:  # "local": a new Ray of our own, even when `ray start` runs a cluster on this machine
        init_local_ray(study_ray_key(config, task_module))


def _ray_start(config: StudyConfig, task: Task) -> RayStart:
    """Ray, being started: the one the command started before torch loaded
    (:mod:`autodistill._launch`) when it is the one this study wants, else a new one."""
    module = type(task).__module__
    return take_early(study_ray_key(config, module)) or RayStart(lambda: _init_ray(config, module))


def _tune_settings() -> None:
    """Ray Tune's loggers and behaviour for a study (before its Tuner runs)."""
    # a failed trial is reported once, by the study's own line with its reason; Ray's
    # controller would also log the worker's traceback at ERROR
    # Ray's own experiment state (ray/) is not what resume reads (the Optuna storage and
    # inflight/ are): a failure to save it, e.g. on a full disk, is not the user's concern
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune", "ray.tune.execution.experiment_state"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    quiet_ray_settings()
    _trials_on_started_workers()
    _keep_starting_actors()


def _trials_on_started_workers() -> None:
    """Ray Tune creates its trial actors with a runtime_env of env_vars (``PL_DISABLE_FORK=1``,
    for PyTorch Lightning), and Ray starts a new worker for an actor whose runtime_env is not
    the job's: the workers it started beforehand (and that imported
    :data:`autodistill._launch.PRELOAD`) would stand idle while new ones import torch. No
    Lightning runs in a trial: the variable goes.
    (Tune's private module; if it moves, trials merely start on new workers, as before.)"""
    with contextlib.suppress(Exception):
        from ray.tune.execution import class_cache

        class_cache.DEFAULT_ENV_VARS.pop("PL_DISABLE_FORK", None)


def _keep_starting_actors() -> None:
    """Ray Tune (``reuse_actors=True``) hands a trial whose own new actor is still starting the
    actor of a trial that just finished, and kills the starting one. When a new worker takes
    longer to start (a process importing torch: seconds) than a trial takes to train, this
    repeats for every trial: all trials run one after another on one actor, while a new worker
    process is started and killed per trial beside it (seen on a freshly booted 2-core machine:
    11 worker processes for 24 trials, the study twice as long; reproduced in
    ``tests/test_ray_start.py``). Here a trial keeps its own actor once that actor holds its
    resources (it is being created), and the finished trial's actor waits, cached, for the next
    trial; a trial whose actor still waits for resources may take the cached one, as before, so
    that no idle actor keeps a waiting trial from its resources. (Tune's private class; if it
    changes, Tune's own behaviour stays.)"""
    with contextlib.suppress(Exception):
        from ray.tune.execution.tune_controller import TuneController

        original = TuneController._maybe_reuse_cached_actor
        if getattr(original, "autodistill_keeps_starting_actors", False):
            return

        def reuse_cached_actor(self, trial) -> bool:
            own = self._trial_to_actor.get(trial)
            if own is not None and trial not in self._resetting_trials and self._actor_manager.is_actor_started(own):
                return False
            return original(self, trial)

        reuse_cached_actor.autodistill_keeps_starting_actors = True
        TuneController._maybe_reuse_cached_actor = reuse_cached_actor


_releasing: list[threading.Thread] = []


def _release_ray() -> None:
    """Shut Ray down in a background thread (:func:`shutdown_ray`: its processes take a few
    tenths of a second to stop).

    While it stops, this process must free no Ray object (an ``ObjectRef``, an actor handle):
    freeing one calls into the driver's core worker, and once ``ray.shutdown`` has torn that
    down but not yet detached it from Python, Ray ends the whole process with exit code 1 and
    no Python error ("The core worker has already been shutdown"), the report half-written.
    Ray objects in reference cycles (a trial's traceback holds Ray Tune's frames) are freed by
    the garbage collector, at a moment nobody chooses: so every cycle is collected first, with
    Ray still up, and the automatic collector stays off until Ray is down."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()

    def shutdown() -> None:
        try:
            shutdown_ray()
        finally:
            if was_enabled:
                gc.enable()

    thread = threading.Thread(target=shutdown, name="autodistill-ray-shutdown", daemon=True)
    thread.start()
    _releasing.append(thread)


def wait_ray_released(interrupted: bool = False) -> None:
    """Wait for :func:`run_study` (``release_ray``) to have shut Ray down; shut it down if it
    is still up (the study ended early). ``interrupted``: the command ends on a signal, which
    may have gone to the whole process group; Ray's processes get up to a second to show
    whether it stopped them too (:func:`~autodistill._launch.shutdown_ray` then kills what is
    left rather than ask them to stop)."""
    import ray

    deadline = time.monotonic() + (1.0 if interrupted and ray.is_initialized() else 0.0)
    while time.monotonic() < deadline and not local_ray_stopped():
        time.sleep(0.05)
    for thread in _releasing:
        thread.join()
    _releasing.clear()
    stop_early(INTERRUPTED_SETTLE_S if interrupted else None)  # started before the study file was parsed, and taken by no study
    if ray.is_initialized():
        shutdown_ray()


def run_study(config: StudyConfig, log: Callable[[str], None] = print, *, resume: bool = False, release_ray: bool = False) -> StudyResult:
    """Run a whole study: the API behind ``autodistill search`` (``resume=False``) and
    ``autodistill resume`` (``resume=True``).

    A new study refuses a results directory or storage that already holds trials of the same
    study name; a resumed one recovers interrupted trials (:mod:`.resume`) and runs until
    ``search.trials`` trials have an outcome. Raises :class:`StudyInterrupted` after Ctrl-C or
    SIGTERM, once the running trials are recorded as interrupted.

    ``release_ray``: shut Ray down in the background once the search has ended and the front's
    latency is re-measured, while the report is written (the CLI, which ends the process then;
    :func:`wait_ray_released`).
    """
    check_paths(config, "config")
    check_points(config, "config")
    results_dir = config.results_dir.resolve()
    created = not results_dir.exists()
    with StudyLock(results_dir, log):
        try:
            return _run_full_disk_named(config, results_dir, log, resume, release_ray)
        except AutodistillError as err:
            # a mistake found before the study began (e.g. a teacher checkpoint of the wrong
            # architecture) leaves no half-made results directory behind
            began = not created or layout.study_db(results_dir).exists() or (results_dir / layout.RAY).exists()
            if not began and not isinstance(err, StudyInterrupted):
                shutil.rmtree(results_dir, ignore_errors=True)
            if isinstance(err, DiskFull):
                raise DiskFull(f"{err}; free space, then {_after_space(config, began)}") from None
            if isinstance(err, StorageUnavailable):
                then = f"run: autodistill resume {config.results_dir}" if began else "run the same search again"
                raise StorageUnavailable(f"{err}; once it is back, {then}") from None
            raise


def _run_full_disk_named(config: StudyConfig, results_dir: Path, log: Callable[[str], None], resume: bool, release_ray: bool) -> StudyResult:
    """:func:`_run_locked`, with a full disk met by the storage (sqlite) or a library's own
    write, rather than by autodistill's writes, raised as :class:`DiskFull` too."""
    try:
        return _run_locked(config, results_dir, log, resume, release_ray)
    except Exception as err:
        if isinstance(err, AutodistillError) or not _io.caused_by_full_disk(err):
            raise
        raise DiskFull(f"no space left on device ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None


def _after_space(config: StudyConfig, began: bool) -> str:
    """What to run once space is free: resume a study that began, else the search again."""
    return f"run: autodistill resume {config.results_dir}" if began else "run the same search again"


def _stored_study(config: StudyConfig):
    """The study in the storage (read as it is), or None where there is none yet."""
    import optuna

    if not config.execution.storage and not layout.study_db(config.results_dir).exists():
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=config.name, storage=rdb_storage(storage_url(config)))
    except KeyError:
        return None


def _existing_trials(config: StudyConfig) -> int:
    study = _stored_study(config)
    return len(study.get_trials(deepcopy=False)) if study is not None else 0


CLOCK_ATTR = "latency_clock_ms"
"""the study's user attribute with the reference of its latency clock (:func:`autodistill.measure.time_runs`)"""


def _study_clock(config: StudyConfig, resume: bool) -> float | None:
    """The reference every CPU latency of the study is scaled to (the teacher's, the trials',
    the re-measured front's): the one its first run took, else taken now, in this process,
    at ``latency.threads``, or the results folder's where that is faster. Where the folder
    holds one for this CPU, the look now is a short one (10 batches, ~0.2 s, not
    :data:`~autodistill.measure.CLOCK_WINDOW_S`): it can only lower the folder's, and the
    first trials wait for the driver's start-up, of which the full look was 2 s. None where
    latency is timed on CUDA."""
    if config.latency.device != "cpu":
        return None
    ms = None
    if resume:
        with contextlib.suppress(Exception):  # a storage it cannot read yet: open_study retries it and says why
            stored = _stored_study(config)
            ms = stored.user_attrs.get(CLOCK_ATTR) if stored is not None else None
    if ms is None:
        kept = _folder_clock(_clock_entries(_clock_file(config)), config.latency.threads)
        measured = clock_reference_ms(config.latency.threads, window_s=0.0 if kept is not None else None)
        ms = min(measured, kept) if kept is not None else measured
    set_clock_reference(config.latency.threads, float(ms))
    return float(ms)


CLOCK_FILE = ".clock.json"
"""in the results folder: per CPU, thread count and torch version, the fastest clock reference
its studies took (their slow seconds last up to 2 s on a shared machine, and a study that began
in one would time everything at that speed)"""


def _clock_file(config: StudyConfig) -> Path:
    return Path(config.execution.results) / CLOCK_FILE


def _clock_entries(path: Path) -> dict:
    """The results folder's clock file, {clock_key: ms} (one that cannot be read: empty)."""
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _folder_clock(known: dict, n_threads: int) -> float | None:
    """The fastest reference the results folder's studies took on this CPU (``known``: its
    clock file's entries), if any."""
    ms = known.get(clock_key(n_threads))
    return float(ms) if isinstance(ms, (int, float)) and ms > 0 else None


def _remember_clock(path: Path, n_threads: int, ms: float) -> None:
    """Keep ``ms`` as the folder's reference on this CPU if it is the fastest yet; a file that
    cannot be written costs nothing but that."""
    known = _clock_entries(path)
    kept = _folder_clock(known, n_threads)
    if kept is not None and kept <= ms:
        return
    with contextlib.suppress(OSError, DiskFull):  # a full disk stops the study where it writes what it needs
        path.parent.mkdir(parents=True, exist_ok=True)
        _io.write_json(path, {**known, clock_key(n_threads): ms}, durable=False)


def _keep_study_clock(config: StudyConfig, study, clock_ms: float | None) -> float | None:
    """The study's clock reference from now on: the stored one where the study has one (a
    resume that could not read it before the storage opened), else ``clock_ms``, stored."""
    stored = study.user_attrs.get(CLOCK_ATTR)
    if stored is not None and clock_ms is not None:
        set_clock_reference(config.latency.threads, float(stored))
        return float(stored)
    if clock_ms is not None:  # a study that got this far (its input is good) leaves its reference to the folder
        study.set_user_attr(CLOCK_ATTR, clock_ms)
        _remember_clock(_clock_file(config), config.latency.threads, clock_ms)
    return clock_ms


def _run_locked(config: StudyConfig, results_dir: Path, log: Callable[[str], None], resume: bool, release_ray: bool) -> StudyResult:
    started = time.perf_counter()
    if not resume:
        existing = _existing_trials(config)
        if existing:
            raise AutodistillError(
                f"{results_dir} already holds study {config.name!r} with {existing} trial(s): continue it with "
                f"`autodistill resume {config.results_dir}` (add trials with --trials N), or choose another --name"
            )
    _io.write_text(layout.config_file(results_dir), dump_config(config))
    task = get_task(config.task)
    # a new study has trials to run: Ray starts (and its workers import what trials need)
    # while the data and the teacher are loaded
    ray_start = _ray_start(config, task) if not resume and config.search.trials > 0 else None
    settle_s = None
    try:
        return _prepare_and_search(config, results_dir, log, resume, task, ray_start, started, release_ray)
    except KeyboardInterrupt:
        settle_s = INTERRUPTED_SETTLE_S  # the command is ending: a Ray still starting is left to end with it
        raise
    finally:
        end_write_ahead()  # study.db one file again, whatever ended the study
        sweep_stale_checkpoints()  # of this machine's workers killed mid-report
        if ray_start is not None:
            ray_start.settle(settle_s)  # never leave Ray half-started behind an error


def _prepare_and_search(config, results_dir, log, resume, task, ray_start, started, release_ray) -> StudyResult:
    import ray

    data = task.load_data(config)
    log(f"data: {data.summary()}")
    task.check_data(config, data)
    if config.search.resources.gpu > 0 and not config.execution.address and not torch.cuda.is_available():
        raise AutodistillError(
            f"search.resources.gpu is {config.search.resources.gpu} but no CUDA GPU is visible here (torch.cuda.is_available() is False); set it to 0"
        )
    clock_ms = _study_clock(config, resume)
    teachers = task.prepare_teachers(config, data, log)
    teacher = teachers.primary  # the reference the report compares students with

    space = search_space(config)
    directions = [config.objectives[m] for m in config.objectives]
    study = open_study(storage_url(config), config.name, directions, retry_s=config.execution.storage_retry_s, log=log, writer=True)
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # experimental in Optuna since 3.2, not deprecated
        study.set_metric_names(list(config.objectives))  # optuna-dashboard labels its axes with them
    inflight_dir = layout.inflight_dir(results_dir)
    recovery = recover(study, inflight_dir, task.quality, log)
    for line in describe(recovery, config.search.trials) if resume else []:
        log(line)
    # Seeded by the number of trials so far: a resumed random or NSGA-II sampler does not
    # replay the first run's sequence.
    study.sampler = make_sampler(config, offset=len(study.get_trials(deepcopy=False)))
    study.set_user_attr("teacher", teacher)
    clock_ms = _keep_study_clock(config, study, clock_ms)
    if len(teachers.records) > 1:
        study.set_user_attr("teachers", teachers.records)
    if not resume:
        for point in config.search.points_to_evaluate:  # tried first, in order
            study.enqueue_trial(point, skip_if_exists=True)
    to_run = max(config.search.trials - recovery.counted, 0)
    targets = _first_trials(config, task, data, teachers, space, study, results_dir, to_run, log)
    if ray_start is not None:
        ray_start.settle()  # before any Ray Tune object is made: see RayStart
    searcher = OptunaSearcher(
        study, space, config.objectives, to_run, task=task, inflight_dir=inflight_dir, epoch_budget=config.search.epoch_budget, constraints=config.constraints
    )
    search_s = 0.0
    if searcher.budget_spent():
        log(f"the epoch budget ({config.search.epoch_budget}) is spent: {searcher.epochs_spent} student-epochs trained; no trials to run")
        to_run = 0
    if to_run:
        budget = f", until {config.search.epoch_budget} student-epochs are spent" if config.search.epoch_budget else ""
        log(f"search: {len(space)} dimensions, {to_run} trials ({config.search.sampler}){budget}, at most {config.search.max_concurrent} at once")
        search_s = _search(config, task, results_dir, searcher, to_run, recovery.counted, data, targets, clock_ms, log, ray_start or _ray_start(config, task))
    # Ray goes down in the background once the front's latency is re-measured, while the
    # report is written: its shutdown takes this process's interpreter from the latency runs
    summary = finalize(config, study, teacher, log, measured=_release_ray if release_ray and to_run else None)
    summary["wall_s"] = time.perf_counter() - started
    summary["search_s"] = search_s
    summary["epochs_spent"] = searcher.epochs_spent
    summary["latency_clock_ms"] = clock_ms
    summary["driver_peak_rss_mb"] = peak_rss_mb()
    summary["data"] = data.summary()
    summary["platform"] = {"python": platform.python_version(), "machine": platform.machine(), "ray": ray.__version__}
    _io.write_json(results_dir / layout.STUDY_JSON, summary)
    shutil.rmtree(inflight_dir, ignore_errors=True)  # every trial has an outcome: nothing to continue
    return StudyResult(results_dir, summary, trials_frame(study, task), load_front(results_dir), summary["wall_s"])


def _first_trials(config, task, data, teachers, space, study, results_dir, to_run, log):
    """The teacher's targets for the trials (None with no trials to run), after what chooses
    the first trials: the pre-screen or the spread start-up design, once per study."""
    if not to_run:
        return None
    targets = task.teacher_targets(config, data, teachers, log)
    if config.search.prescreen is not None and PRESCREEN_EPOCHS not in study.user_attrs:
        from .prescreen import run_prescreen

        run_prescreen(config, task, data, targets, space, study, results_dir, log)
    if config.search.startup != "random" and STARTUP_DESIGN not in study.user_attrs:
        from .startup import run_spread

        run_spread(config, task, data, targets, space, study, startup_trials(config) - len(config.search.points_to_evaluate), log)
    return targets


def _search(config, task, results_dir, searcher, to_run, done_before, data, targets, clock_ms, log, ray_start: RayStart) -> float:
    """The Ray Tune run. Ctrl-C or SIGTERM stops it the way Ray stops on SIGINT (trials are
    ended, the loop returns); the running trials are then recorded as interrupted."""
    from ray import tune

    started = time.perf_counter()
    ray_start.wait()  # before the scheduler is made: see RayStart
    _tune_settings()
    progress = StudyProgress(results_dir, searcher, config.objectives, to_run, quality=task.quality, done_before=done_before)
    searcher.when_none_left = warm_report  # a slot is free from then on: the report's imports use it
    scheduler = make_scheduler(config.search, config.objectives, max_epochs(config), searcher, searcher.stop_reasons, quality=task.quality)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, study=config, data=data, teacher=targets, clock_ms=clock_ms),
        {"cpu": config.search.resources.cpu, "gpu": config.search.resources.gpu},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=to_run,
            max_concurrent_trials=min(config.search.max_concurrent, to_run),
            time_budget_s=config.search.time_budget_s,
            reuse_actors=True,
            trial_dirname_creator=lambda trial: layout.ray_trial_dirname(trial.config["number"], trial.trial_id),
        ),
        run_config=tune.RunConfig(
            name="ray" if not config.execution.ray_storage else f"{config.name}-ray",
            storage_path=config.execution.ray_storage or str(results_dir),
            callbacks=[progress],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=config.search.max_failures),
            stop=_StudyStopper(searcher),
        ),
    )
    # Ray stops running trials only at the time budget (or on an interrupt): say which in
    # the reason of every trial it stops, during the run and at its end alike.
    searcher.stop_reason = "stopped by the time budget" if config.search.time_budget_s else "stopped"
    progress.start()
    try:
        with _interrupt_handler(searcher, progress.print, config.results_dir):
            tuner.fit()
    except KeyboardInterrupt:
        if not searcher.interrupted:
            raise
    finally:
        progress.record_unreported(searcher.close_live())
        progress.stop()
    if searcher.fault is not None:
        raise searcher.fault
    if searcher.interrupted:
        raise StudyInterrupted(interrupted_line(config.results_dir))
    return time.perf_counter() - started


def max_epochs(config: StudyConfig) -> int:
    """The most epochs a trial can train (``train.epochs`` may be searched)."""
    epochs = config.train.epochs
    if isinstance(epochs, int):
        return epochs
    return int(max(epochs.choice)) if hasattr(epochs, "choice") else int(epochs.high)


INTERRUPT_GRACE_S = 15.0

INTERRUPTED_SETTLE_S = 0.0
"""how long an interrupted command waits for a Ray that is still starting: not at all. A
signal to the whole process group stops its processes mid-start, and its start then either
waits ~30 s for a raylet that will not come or aborts the process (SIGABRT) within ~3 s;
left alone, it ends with the process (its GCS and raylet die with the thread that started
them)."""


class _StudyStopper(Stopper):
    """Ray Tune stopper that ends the whole run once the searcher is marked interrupted or
    the epoch budget is spent; Ray then stops every running trial and tells the searcher,
    which records it as interrupted, or as PRUNED by the budget."""

    def __init__(self, searcher):
        self.searcher = searcher

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        if self.searcher.interrupted:
            return True
        if self.searcher.budget_spent():
            self.searcher.stop_reason = "stopped by the epoch budget"
            return True
        return False


@contextlib.contextmanager
def _interrupt_handler(searcher, log: Callable[[str], None], results: Path):
    """First Ctrl-C / SIGTERM: mark the searcher interrupted, which ends the Ray Tune run at
    its next step (:class:`_StudyStopper`; Ray's own SIGINT handler is turned off so it
    cannot end the run without the searcher knowing). A second one raises KeyboardInterrupt.

    Ray's own processes ignore SIGINT, so Ctrl-C in a terminal stops gracefully; a SIGTERM to
    the whole process group (``timeout``, ``systemctl stop``, a container stop) kills the
    raylet too, and Ray's cleanup then blocks in native code where no Python exception can
    reach it. Once the local Ray shows the signal (:func:`local_ray_stopped`), or if the run has not
    ended :data:`INTERRUPT_GRACE_S` seconds after the signal, the process exits with 130; the
    trials still RUNNING in the storage are recovered by resume like after a SIGKILL."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if searcher.interrupted:
            raise KeyboardInterrupt
        searcher.interrupted = True
        searcher.stop_reason = "interrupted"
        log(f"{signal.Signals(signum).name}: stopping the running trials (again to stop at once); `autodistill resume {results}` continues")
        watchdog.start()

    def give_up(why: str) -> None:
        log(f"{why}: exiting now; `autodistill resume {results}` retries the running trials")
        sys.stdout.flush()
        os._exit(130)

    def watch() -> None:
        deadline = time.monotonic() + INTERRUPT_GRACE_S
        while not ended.wait(0.2):
            if local_ray_stopped():  # nothing will end the run now: no need to wait
                give_up("Ray's own processes got the signal too and have stopped")
            if time.monotonic() > deadline:
                give_up(f"Ray did not stop within {INTERRUPT_GRACE_S:.0f} s (its processes were probably signalled too)")

    ended = threading.Event()
    watchdog = threading.Thread(target=watch, name="autodistill-interrupt-watchdog", daemon=True)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        ended.set()
        for sig, old in previous.items():
            signal.signal(sig, old)
