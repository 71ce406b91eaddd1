"""Assembly of a study: data, teacher, teacher outputs, the Optuna study, the Ray Tune
``Tuner``, and the results at the end."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from ray.tune import Stopper

from .. import _io
from .._errors import AutodistillError, StudyInterrupted
from ..config import StudyConfig, dump_config
from ..data import load_dataset
from ..measure import measure_latency, peak_rss_mb, static_costs
from ..space import search_space


@dataclass
class StudyResult:
    results_dir: Path
    summary: dict[str, Any]
    trials: pd.DataFrame
    front: pd.DataFrame
    wall_s: float


def make_sampler(config: StudyConfig, offset: int = 0):
    import warnings

    import optuna

    from ..constraints import ConstraintsFunc

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    seed = config.search.seed + offset
    constraints = ConstraintsFunc(config.constraints) if config.constraints else None
    # a third of the expected trials are random (4 to 10): with an epoch budget, expect as
    # many trials as it holds at full length rather than search.trials, which may be far off
    expected = config.search.trials
    if config.search.epoch_budget:
        expected = min(expected, max(1, config.search.epoch_budget // max_epochs(config)))
    startup = min(10, max(4, expected // 3))
    if config.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints)
    if config.search.sampler == "gp":
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # "greenlet unavailable" is not the user's concern
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, constraints_func=constraints)
    # multivariate TPE models dimensions jointly; the constant liar keeps parallel
    # trials from being sampled at the same point while earlier ones still run.
    return optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=startup, constraints_func=constraints
    )


def _init_ray(config: StudyConfig) -> None:
    import ray

    # a failed trial is reported once, by the study's own line with its reason; Ray's
    # controller would also log the worker's traceback at ERROR
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if config.execution.address:
        ray.init(address=config.execution.address, **kwargs)
    else:  # "local": a new Ray of our own, even when `ray start` runs a cluster on this machine
        ray.init(address="local", include_dashboard=False, **kwargs)


def _teacher_record(config: StudyConfig, teacher_model, info, data) -> dict[str, Any]:
    input_shape = tuple(data.x_train.shape[1:])
    costs = static_costs(teacher_model, input_shape)
    latency = measure_latency(teacher_model, input_shape, config.latency)
    return {
        "arch": info.spec["family"] if not info.spec["dims"] else {"family": info.spec["family"], **info.spec["dims"]},
        "family": info.spec["family"],
        "source": info.source,
        "path": info.path,
        "metrics": {
            "accuracy": info.val_accuracy,
            "test_accuracy": info.test_accuracy,
            **costs,
            "latency_ms": latency.median_ms,
        },
    }


def run_study(config: StudyConfig, log: Callable[[str], None] = print, *, resume: bool = False) -> StudyResult:
    """Run a whole study: the API behind ``autodistill search`` (``resume=False``) and
    ``autodistill resume`` (``resume=True``).

    A new study refuses a results directory or storage that already holds trials of the same
    study name; a resumed one recovers interrupted trials (:mod:`.resume`) and runs until
    ``search.trials`` trials have an outcome. Raises :class:`StudyInterrupted` after Ctrl-C or
    SIGTERM, once the running trials are recorded as interrupted.
    """
    from .._lock import StudyLock
    from ..config import check_paths
    from ..space import check_points

    check_paths(config, "config")
    check_points(config, "config")
    results_dir = config.results_dir.resolve()
    created = not results_dir.exists()
    with StudyLock(results_dir, log):
        try:
            return _run_locked(config, results_dir, log, resume)
        except AutodistillError as err:
            # a mistake found before the study began (e.g. a teacher checkpoint of the wrong
            # architecture) leaves no half-made results directory behind
            if created and not isinstance(err, StudyInterrupted) and not (results_dir / "study.db").exists():
                shutil.rmtree(results_dir, ignore_errors=True)
            raise


def _existing_trials(config: StudyConfig) -> int:
    import optuna

    from ..results import rdb_storage, storage_url

    if not config.execution.storage and not (config.results_dir / "study.db").exists():
        return 0
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return len(optuna.load_study(study_name=config.name, storage=rdb_storage(storage_url(config))).get_trials(deepcopy=False))
    except KeyError:
        return 0


def _run_locked(config: StudyConfig, results_dir: Path, log: Callable[[str], None], resume: bool) -> StudyResult:
    import ray

    from ..augment import check_augment
    from ..results import finalize, load_front, open_study, storage_url, trials_frame
    from ..teacher import prepare_teacher, teacher_outputs
    from .resume import describe, recover
    from .searcher import OptunaSearcher

    started = time.perf_counter()
    if not resume:
        existing = _existing_trials(config)
        if existing:
            raise AutodistillError(
                f"{results_dir} already holds study {config.name!r} with {existing} trial(s): continue it with "
                f"`autodistill resume {config.results_dir}` (add trials with --trials N), or choose another --name"
            )
    _io.write_text(results_dir / "config.yaml", dump_config(config))

    data = load_dataset(config.data)
    log(f"data: {data.summary()}")
    check_augment(config.augment, data.image_size)
    if config.search.resources.gpu > 0 and not config.execution.address:
        import torch

        if not torch.cuda.is_available():
            raise AutodistillError(f"search.resources.gpu is {config.search.resources.gpu} but no CUDA GPU is visible here (torch.cuda.is_available() is False); set it to 0")
    teacher_models, records = [], []
    for i, tcfg in enumerate(config.all_teachers):
        model_i, info = prepare_teacher(config, data, log, tcfg)
        record = _teacher_record(config, model_i, info, data)
        tm = record["metrics"]
        which = f"teacher {i} (weight {tcfg.weight:g})" if config.teachers else "teacher"
        log(
            f"{which}: {info.spec['family']} ({tm['params']:,} params), validation accuracy {tm['accuracy']:.4f}, "
            f"test accuracy {tm['test_accuracy']:.4f} [{info.source}]"
        )
        teacher_models.append(model_i)
        records.append({**record, "weight": tcfg.weight})
    teacher = records[0]  # the primary teacher: the reference the report compares students with

    space = search_space(config)
    directions = [config.objectives[m] for m in config.objectives]
    study = open_study(storage_url(config), config.name, directions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental in Optuna since 3.2
        study.set_metric_names(list(config.objectives))  # optuna-dashboard labels its axes with them
    inflight_dir = results_dir / "inflight"
    recovery = recover(study, inflight_dir, log)
    for line in describe(recovery, config.search.trials) if resume else []:
        log(line)
    # Seeded by the number of trials so far: a resumed random or NSGA-II sampler does not
    # replay the first run's sequence.
    study.sampler = make_sampler(config, offset=len(study.get_trials(deepcopy=False)))
    study.set_user_attr("teacher", teacher)
    if config.teachers:
        study.set_user_attr("teachers", records)
    if not resume:
        for point in config.search.points_to_evaluate:  # tried first, in order
            study.enqueue_trial(point, skip_if_exists=True)
    to_run = max(config.search.trials - recovery.counted, 0)
    searcher = OptunaSearcher(study, space, config.objectives, to_run, inflight_dir=inflight_dir, epoch_budget=config.search.epoch_budget)
    search_s = 0.0
    if searcher.budget_spent():
        log(f"the epoch budget ({config.search.epoch_budget}) is spent: {searcher.epochs_spent} student-epochs trained; no trials to run")
        to_run = 0
    if to_run:
        budget = f", until {config.search.epoch_budget} student-epochs are spent" if config.search.epoch_budget else ""
        log(f"search: {len(space)} dimensions, {to_run} trials ({config.search.sampler}){budget}, at most {config.search.max_concurrent} at once")
        targets = teacher_outputs(teacher_models, data, config, log)
        live = ""
        if targets.live is not None:
            if config.distill.needs_teacher_features and targets.features is None:
                live = ", the teacher runs live on every batch (feature and attention losses)"
            elif config.augment.active:
                live = ", the teacher runs live on augmented batches"
        log(f"teacher outputs: {targets.nbytes / 2**20:.1f} MB ({targets.logits.dtype}), {targets.source}{live}")
        search_s = _search(config, results_dir, searcher, to_run, recovery.counted, data, targets, log)
    summary = finalize(config, study, teacher, log)
    summary["wall_s"] = time.perf_counter() - started
    summary["search_s"] = search_s
    summary["epochs_spent"] = searcher.epochs_spent
    summary["driver_peak_rss_mb"] = peak_rss_mb()
    summary["data"] = data.summary()
    summary["platform"] = {"python": platform.python_version(), "machine": platform.machine(), "ray": ray.__version__}
    _io.write_json(results_dir / "study.json", summary)
    shutil.rmtree(inflight_dir, ignore_errors=True)  # every trial has an outcome: nothing to continue
    return StudyResult(results_dir, summary, trials_frame(study), load_front(results_dir), summary["wall_s"])


def _search(config, results_dir, searcher, to_run, done_before, data, targets, log) -> float:
    """The Ray Tune run. Ctrl-C or SIGTERM stops it the way Ray stops on SIGINT (trials are
    ended, the loop returns); the running trials are then recorded as interrupted."""
    from ray import tune

    from .progress import StudyProgress
    from .schedulers import make_scheduler
    from .trainable import run_trial

    started = time.perf_counter()
    progress = StudyProgress(results_dir, searcher, config.objectives, to_run, done_before=done_before)
    scheduler = make_scheduler(config.search, config.objectives, max_epochs(config), searcher, searcher.stop_reasons)
    _init_ray(config)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, study=config, data=data, teacher=targets),
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
            trial_dirname_creator=lambda trial: f"trial_{trial.config['number']:04d}_{trial.trial_id}",
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
    if searcher.interrupted:
        raise StudyInterrupted(f"interrupted; `autodistill resume {config.results_dir}` continues the study")
    return time.perf_counter() - started


def max_epochs(config: StudyConfig) -> int:
    """The most epochs a trial can train (``train.epochs`` may be searched)."""
    epochs = config.train.epochs
    if isinstance(epochs, int):
        return epochs
    return int(max(epochs.choice)) if hasattr(epochs, "choice") else int(epochs.high)


INTERRUPT_GRACE_S = 15.0


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
    reach it. If the run has not ended :data:`INTERRUPT_GRACE_S` seconds after the signal, the
    process exits with 130; the trials still RUNNING in the storage are recovered by resume
    like after a SIGKILL."""
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

    def give_up() -> None:
        log(f"Ray did not stop within {INTERRUPT_GRACE_S:.0f} s (its processes were probably signalled too): exiting now; "
            f"`autodistill resume {results}` retries the running trials")
        sys.stdout.flush()
        os._exit(130)

    watchdog = threading.Timer(INTERRUPT_GRACE_S, give_up)
    watchdog.daemon = True
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        watchdog.cancel()
        for sig, old in previous.items():
            signal.signal(sig, old)
