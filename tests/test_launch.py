"""``autodistill search`` starts a local Ray before torch loads (autodistill._launch): which
Ray it guesses from the study file, and that the study takes that one or shuts it down."""

import subprocess
import sys

import pytest
import yaml
from helpers import small_study

from autodistill import _launch
from autodistill._launch import PRELOAD, early_key, local_ray_key, start_early, take_early
from autodistill.config import SearchConfig
from autodistill.loading import load_config
from autodistill.tasks import get_task

DIGITS = "search_spaces/digits.yaml"


def test_the_defaults_read_before_parsing_are_the_configs():
    search = SearchConfig()
    assert (_launch.DEFAULTS["trials"], _launch.DEFAULTS["max_concurrent"], _launch.DEFAULTS["cpu"]) == (
        search.trials,
        search.max_concurrent,
        search.resources.cpu,
    )
    assert load_config(DIGITS).task == _launch.DEFAULTS["task"]  # digits.yaml names no task


@pytest.mark.parametrize("flags", [[], ["--trials", "1"], ["--max-concurrent=1"], ["--results", "/tmp/x", "--name", "n", "--trials=3"]])
def test_the_guess_is_the_ray_the_study_wants(flags):
    from autodistill.tune.runner import _local_key

    overrides = {"--trials": "search.trials", "--max-concurrent": "search.max_concurrent"}
    given = {}
    it = iter(flags)
    for f in it:
        name, _, value = f.partition("=")
        given[name] = value or next(it)
    config = load_config(DIGITS, {overrides[k]: int(v) for k, v in given.items() if k in overrides})
    assert early_key([DIGITS, *flags]) == _local_key(config, type(get_task(config.task)).__module__)


def test_a_language_model_study_preloads_its_task(tmp_path):
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump({"task": "language_modeling", "search": {"trials": 1}}))
    assert early_key([str(path)]) == local_ray_key(2, 1, 1.0, type(get_task("language_modeling")).__module__)
    assert early_key([str(path)])[1][: len(PRELOAD)] == tuple(PRELOAD)


@pytest.mark.parametrize(
    "raw, flags",
    [
        ({"execution": {"address": "ray://head:10001"}}, []),
        ({}, ["--address", "auto"]),
        ({"search": {"resources": {"gpu": 0.5}}}, []),
        ({}, ["--help"]),
        ({}, ["--some-new-flag"]),
        ({"task": ["not", "a", "name"]}, []),
    ],
)
def test_no_guess_for_a_cluster_gpus_or_anything_unclear(tmp_path, raw, flags):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert early_key([str(path), *flags]) is None


def test_an_unreadable_study_file_starts_nothing(tmp_path):
    (tmp_path / "bad.yaml").write_text("search: [unclosed")
    for args in ([str(tmp_path / "missing.yaml")], [str(tmp_path / "bad.yaml")], ["--trials"]):
        start_early(args)  # raises nothing: the CLI reports the mistake
        assert _launch._early == []


def test_the_command_imports_neither_torch_nor_ray_before_it_starts_ray():
    code = "import sys, autodistill._launch; print(sorted(m for m in ('torch', 'ray', 'optuna') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_a_study_takes_the_early_ray_or_shuts_a_wrong_one_down(tmp_path):
    import ray

    from autodistill.tune.runner import _ray_start

    path = small_study(tmp_path)
    config = load_config(path)
    start_early([str(path)])
    early = _launch._early[0]
    try:
        assert _ray_start(config, get_task(config.task)) is early  # taken, not a second Ray
        early.wait()
        assert ray.cluster_resources()["CPU"] == early.key[0]
    finally:
        _launch.stop_early()
        ray.shutdown()
    start_early([str(path), "--max-concurrent", "1"])  # a guess the study does not hold to
    early = _launch._early[0]
    try:
        assert take_early(("other",)) is None and _launch._early == []
        assert not ray.is_initialized()  # waited for and shut down
    finally:
        early.settle()
        ray.shutdown()
