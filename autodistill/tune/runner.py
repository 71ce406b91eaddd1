"""Assembly of a study: data, teacher, teacher outputs, the Optuna study, the Ray Tune
``Tuner``, and the results at the end."""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .. import _io
from ..config import StudyConfig, dump_config
from ..data import load_dataset
from ..measure import measure_latency, static_costs
from ..space import search_space


@dataclass
class StudyResult:
    results_dir: Path
    summary: dict[str, Any]
    trials: pd.DataFrame
    front: pd.DataFrame
    wall_s: float


def make_sampler(config: StudyConfig):
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    seed = config.search.seed
    if config.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    # multivariate TPE models dimensions jointly; the constant liar keeps parallel
    # trials from being sampled at the same point while earlier ones still run.
    return optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=min(10, max(4, config.search.trials // 3))
    )


def _init_ray(config: StudyConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if config.execution.address:
        ray.init(address=config.execution.address, **kwargs)
    else:
        ray.init(include_dashboard=False, **kwargs)


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


def run_study(config: StudyConfig, log: Callable[[str], None] = print) -> StudyResult:
    """Run a whole study: the API behind ``autodistill search``."""
    import ray
    from ray import tune

    from ..results import finalize, open_study, storage_url, trials_frame
    from ..teacher import prepare_teacher, teacher_outputs
    from .progress import StudyProgress
    from .searcher import OptunaSearcher
    from .trainable import run_trial

    started = time.perf_counter()
    results_dir = config.results_dir.resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    _io.write_text(results_dir / "config.yaml", dump_config(config))

    data = load_dataset(config.data)
    log(f"data: {data.summary()}")
    teacher_model, info = prepare_teacher(config, data, log)
    teacher = _teacher_record(config, teacher_model, info, data)
    tm = teacher["metrics"]
    log(
        f"teacher: {info.spec['family']} ({tm['params']:,} params), validation accuracy {tm['accuracy']:.4f}, "
        f"test accuracy {tm['test_accuracy']:.4f} [{info.source}]"
    )
    logits = teacher_outputs(teacher_model, data)

    space = search_space(config)
    study = open_study(storage_url(config), config.name, [config.objectives[m] for m in config.objectives], make_sampler(config))
    study.set_user_attr("teacher", teacher)
    done_before = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())
    to_run = config.search.trials
    if done_before:
        log(f"study {config.name!r} in {storage_url(config)} already has {done_before} finished trial(s); adding {to_run} more")
    log(f"search: {len(space)} dimensions, {to_run} trials ({config.search.sampler}), at most {config.search.max_concurrent} at once")

    searcher = OptunaSearcher(study, space, config.objectives, to_run)
    progress = StudyProgress(results_dir, searcher, config.objectives, to_run)
    _init_ray(config)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, study=config, data=data, teacher_logits=logits),
        {"cpu": config.search.resources.cpu, "gpu": config.search.resources.gpu},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=to_run,
            max_concurrent_trials=min(config.search.max_concurrent, to_run),
            time_budget_s=config.search.time_budget_s,
            reuse_actors=True,
            trial_dirname_creator=lambda trial: f"trial_{trial.config['number']:04d}_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name="ray",
            storage_path=str(results_dir),
            callbacks=[progress],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    # Ray stops running trials only at the time budget (or on an interrupt): say which in
    # the reason of every trial it stops, during the run and at its end alike.
    searcher.stop_reason = "stopped by the time budget" if config.search.time_budget_s else "stopped"
    progress.start()
    try:
        tuner.fit()
    finally:
        progress.record_unreported(searcher.close_live())
        progress.stop()
    search_s = time.perf_counter() - started
    summary = finalize(config, study, teacher, log)
    summary["wall_s"] = time.perf_counter() - started
    summary["search_s"] = search_s
    summary["trials_before"] = done_before
    summary["data"] = data.summary()
    summary["platform"] = {"python": platform.python_version(), "machine": platform.machine(), "ray": ray.__version__}
    _io.write_json(results_dir / "study.json", summary)
    from ..results import load_front

    return StudyResult(results_dir, summary, trials_frame(study), load_front(results_dir), summary["wall_s"])

