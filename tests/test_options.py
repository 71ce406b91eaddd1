"""Each option list of the study file (autodistill.config._options) names exactly what the
code that acts on it knows: a value cannot validate and then fail deep inside a trial."""

from __future__ import annotations

import optuna
import pytest

from autodistill._errors import ConfigError
from autodistill.compress.prune import _NNI_PRUNERS, IMPORTANCES
from autodistill.config import _options as options
from autodistill.config import parse_config
from autodistill.data import LOADERS
from autodistill.distill.schedules import RAMPS, ramp
from autodistill.tasks import TASK_TYPES, get_task, list_tasks
from autodistill.tune.runner import make_sampler, startup_trials
from autodistill.tune.schedulers import OPTUNA_PRUNERS, make_scheduler


def test_tasks_are_the_registered_ones():
    assert set(options.TASKS) == set(list_tasks()) == set(TASK_TYPES)
    assert set(options.TASK_METRICS) == set(options.TASKS) == set(options.TASK_QUALITY)
    for name in options.TASKS:
        task = get_task(name)
        assert task.name == name
        assert task.quality in task.metrics and task.quality_mode in ("max", "min")
        assert task.quality in task.recorded_metrics and set(task.metrics) <= set(task.recorded_metrics)
        assert set(task.latency_metrics) <= set(task.metrics)
        assert task.export_formats


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="unknown task 'speech'; valid: image_classification"):
        get_task("speech")


def test_datasets_have_loaders():
    assert set(options.DATASETS) == set(LOADERS)


def test_schedules_have_ramps():
    assert set(options.TEMPERATURE_SCHEDULES) == set(RAMPS) | {"adaptive"}  # adaptive reads the teacher's entropy
    assert set(options.WEIGHT_SCHEDULES) <= set(RAMPS)
    for name in RAMPS:  # every ramp goes from start to end
        assert ramp(name, 4.0, 1.0, 0.0, steps=3) == 4.0
        assert ramp(name, 4.0, 1.0, 1.0, steps=3) == (4.0 if name == "constant" else pytest.approx(1.0))


def test_importances_have_torch_pruning_factories():
    assert set(options.PRUNE_IMPORTANCES) == set(IMPORTANCES)
    assert set(options.NNI_IMPORTANCES) == set(_NNI_PRUNERS)


@pytest.mark.parametrize("name", options.PRUNERS)
def test_every_pruner_builds_its_scheduler(name):
    assert set(options.SINGLE_OBJECTIVE_PRUNERS) == set(OPTUNA_PRUNERS)
    objectives = {"accuracy": "max"} if name in options.SINGLE_OBJECTIVE_PRUNERS else {"accuracy": "max", "params": "min"}
    config = parse_config({"objectives": objectives, "search": {"pruner": name}})
    scheduler = make_scheduler(config.search, config.objectives, 10, searcher=None, stop_reasons={}, quality=get_task(config.task).quality)
    assert (scheduler is None) == (name == "none")


@pytest.mark.parametrize("name", options.SAMPLERS)
def test_every_sampler_builds(name):
    sampler = make_sampler(parse_config({"search": {"sampler": name}}))
    assert isinstance(sampler, optuna.samplers.BaseSampler)


def test_language_model_options_have_their_code():
    import torch

    from autodistill.config import KD_LOSSES, LM_FAMILIES, LM_INITS
    from autodistill.config._options import LM_ATTENTION_LOSSES, LM_HIDDEN_DISTANCES
    from autodistill.tasks.language_modeling import losses, models

    log_p = torch.log_softmax(torch.tensor([[1.0, 0.0, -1.0]]), -1)
    for kind in KD_LOSSES:
        assert losses.divergence(kind, log_p, log_p).item() == 0.0
    for family in LM_FAMILIES:
        assert models.config_class(family)().model_type == family and models.model_class(family).config_class is models.config_class(family)
    teacher = models.build(
        models.new_config("qwen2", {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}, 20, 16, 19), 0
    )
    for init in LM_INITS:
        student = models.build(models.student_config(teacher.config, models.shape_of(teacher.config)), 1)
        assert models.init_student(student, teacher, init, torch.zeros(1, 4, dtype=torch.long)) == init
    a = torch.full((1, 1, 2, 2), 0.5)
    for kind in LM_ATTENTION_LOSSES:
        assert losses.attention_loss(a, a, kind).item() == 0.0
    h = torch.ones(1, 2, 3)
    for distance in LM_HIDDEN_DISTANCES:
        assert losses.hidden_loss(h, h, distance).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("sampler", "startup"), [("tpe", 2), ("tpe", 5), ("gp", 3)])
def test_search_startup_trials_is_how_many_trials_are_drawn_before_the_model(sampler, startup):
    config = parse_config({"objectives": {"accuracy": "max", "params": "min"}, "search": {"sampler": sampler, "startup_trials": startup, "seed": 3}})

    def draws(sampler) -> list[float]:
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        out = []
        for _ in range(startup + 2):
            trial = study.ask()
            x = trial.suggest_float("x", 0.0, 1.0)
            study.tell(trial, [1.0 - (x - 0.3) ** 2, x])
            out.append(x)
        return out

    ours, random = draws(make_sampler(config)), draws(optuna.samplers.RandomSampler(seed=3))
    assert ours[:startup] == random[:startup]  # the start-up trials: the sampler's seeded random draws
    assert ours[startup:] != random[startup:]  # then the model
    # the default: a third of the trials expected, 4 to 10
    assert startup_trials(parse_config({"search": {"trials": 24}})) == 8
    assert startup_trials(parse_config({"search": {"trials": 6}})) == 4
    assert startup_trials(parse_config({"search": {"trials": 24, "startup_trials": 1}})) == 1


def test_search_startup_trials_needs_a_sampler_that_has_them():
    for bad, message in ((0, "search.startup_trials"), ("many", "search.startup_trials")):
        with pytest.raises(ConfigError, match=message):
            parse_config({"search": {"startup_trials": bad}})
    with pytest.raises(ConfigError, match="the random sampler has no start-up trials"):
        parse_config({"search": {"sampler": "random", "startup_trials": 4}})
    assert parse_config({"search": {"sampler": "random", "startup_trials": 4, "startup": "spread"}}).search.startup_trials == 4  # what spread chooses
