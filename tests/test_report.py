"""Parameter importances of a study (fANOVA, in study.json and report.html)."""

import warnings

import numpy as np
import optuna

from autodistill.report import MIN_IMPORTANCE_TRIALS, _importance_figure
from autodistill.results import param_importances


def _study(n_trials):
    """Two objectives: accuracy driven by ``lr`` alone, params by ``width`` alone; ``noise`` drives nothing."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    rng = np.random.default_rng(0)

    def objective(trial):
        lr, width = trial.suggest_float("lr", 0, 1), trial.suggest_int("width", 8, 64)
        trial.suggest_float("noise", 0, 1)
        return 3 * lr + rng.normal(0, 0.05), 100.0 * width

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(objective, n_trials=n_trials)
    return study


def test_importances_rank_the_parameter_that_drives_each_objective():
    objectives = {"accuracy": "max", "params": "min"}
    values = param_importances(_study(24), objectives)
    assert set(values) == {"accuracy", "params"}
    assert max(values["accuracy"], key=values["accuracy"].get) == "lr"
    assert max(values["params"], key=values["params"].get) == "width" and values["params"]["width"] > 0.9
    for per_metric in values.values():
        assert abs(sum(per_metric.values()) - 1.0) < 1e-9  # Optuna normalises them
    figure = _importance_figure(values)
    assert "Parameter importances" in figure.layout.title.text and len(figure.data) == 2


def test_too_few_trials_for_fanova_give_no_importances():
    objectives = {"accuracy": "max", "params": "min"}
    assert param_importances(_study(MIN_IMPORTANCE_TRIALS - 1), objectives) == {}
    assert set(param_importances(_study(MIN_IMPORTANCE_TRIALS), objectives)) == {"accuracy", "params"}
    assert _importance_figure({}) is None
