import optuna
import pytest

from autodistill import parse_config
from autodistill._tunable import FloatRange
from autodistill.space import describe, resolve, sample, search_space

RAW = {
    "student": {
        "family": {"choice": ["cnn", "mobilenet"]},
        "cnn": {"widths": [8, 16], "depths": [{"low": 1, "high": 3}, 1], "width_mult": {"low": 0.5, "high": 1.0, "step": 0.25}},
        "mobilenet": {"widths": [8, 16], "depths": [1, 1], "expand_ratio": {"choice": [2, 4]}},
        "resnet": {"width_mult": {"low": 0.5, "high": 1.0}},  # never sampled: not in the family choice
    },
    "train": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}},
}


def test_space_lists_dimensions_with_conditions():
    space = search_space(parse_config(RAW))
    names = {d.name: d for d in space}
    assert set(names) == {
        "student.family",
        "student.cnn.depths[0]",
        "student.cnn.width_mult",
        "student.mobilenet.expand_ratio",
        "train.lr",
    }
    assert names["student.cnn.depths[0]"].condition == ("student.family", "cnn")
    assert names["train.lr"].condition is None
    assert names["train.lr"].dist == FloatRange(1e-4, 1e-2, log=True)
    rows = describe(space)
    assert {"dimension": "train.lr", "distribution": "float [0.0001, 0.01] log", "when": ""} in rows


def test_fixed_family_has_no_conditions():
    cfg = parse_config({"student": {"family": "cnn", "cnn": {"width_mult": {"low": 0.5, "high": 1.0}}}})
    (dim,) = search_space(cfg)
    assert dim.name == "student.cnn.width_mult" and dim.condition is None


def test_sample_only_draws_the_chosen_family():
    cfg = parse_config(RAW)
    space = search_space(cfg)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        params = sample(trial, space)
        family = params["student.family"]
        seen.add(family)
        other = "mobilenet" if family == "cnn" else "cnn"
        assert not any(k.startswith(f"student.{other}.") for k in params)
        assert 1e-4 <= params["train.lr"] <= 1e-2
        resolved = resolve(cfg, params)
        assert resolved.student.family == family
        assert resolved.train.lr == params["train.lr"]
        if family == "cnn":
            assert resolved.student.cnn.depths[0] == params["student.cnn.depths[0]"]
            assert resolved.student.cnn.width_mult in (0.5, 0.75, 1.0)
        study.tell(trial, 0.0)
    assert seen == {"cnn", "mobilenet"}


def test_resolve_rejects_unknown_parameter():
    with pytest.raises(KeyError, match="not in this study's search space"):
        resolve(parse_config(RAW), {"train.momentum": 0.9})
