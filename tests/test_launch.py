"""``autodistill search`` starts the study's local Ray before torch loads: the study file is
read and validated without torch, the Ray it wants is started in the background, and the
study takes it when it is the one it would have started (autodistill._launch)."""

import contextlib
import json
import os
import subprocess
import sys

import pytest
from helpers import small_study

from autodistill import _launch
from autodistill._launch import SEARCH_FLAGS, RayStart, early_key, start_early, study_ray_key, take_early, task_module
from autodistill.loading import load_config
from autodistill.tasks import TASK_TYPES, get_task


@pytest.fixture
def study_file(tmp_path):
    return small_study(tmp_path, cached_teacher=False, **{"search.trials": 6, "search.max_concurrent": 3})


def _late_key(path, overrides=None):
    """The key of the Ray the study itself would start (tune.runner._ray_start)."""
    config = load_config(path, overrides)
    return study_ray_key(config, type(get_task(config.task)).__module__)


def test_the_early_ray_is_the_one_the_study_would_start(study_file):
    assert early_key(["search", str(study_file)]) == _late_key(study_file)
    cpus, preload = early_key(["search", str(study_file)])
    assert cpus == min(3, os.cpu_count()) and preload[-1] == "autodistill.tasks.image_classification"


@pytest.mark.parametrize(
    "flags",
    [["--trials", "1"], ["--trials=1"], ["--max-concurrent", "1", "--results", "elsewhere", "--name", "other"], ["--time-budget", "30", "--epoch-budget", "9"]],
)
def test_the_flags_change_the_early_ray_as_they_change_the_study(study_file, flags):
    overrides = {}
    it = iter(flags)
    for flag in it:
        name, eq, value = flag.partition("=")
        overrides[SEARCH_FLAGS[name]] = value if eq else next(it)
    assert early_key(["search", str(study_file), *flags]) == _late_key(study_file, overrides)
    assert early_key(["--debug", "search", *flags, str(study_file)]) == _late_key(study_file, overrides)


def test_the_search_flags_are_the_cli_s():
    from typer.main import get_command

    from autodistill.cli import app

    search = get_command(app).commands["search"]
    assert {opt for p in search.params for opt in p.opts if opt.startswith("--")} == set(SEARCH_FLAGS)


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["resume", "results/x"], "another command"),
        (["search", "{file}", "--help"], "help"),
        (["search", "{file}", "--unknown", "1"], "a flag it does not know"),
        (["search", "{file}", "{file}"], "two files"),
        (["search", "{file}", "--address", "auto"], "a cluster"),
        (["search", "{file}", "--trials", "two"], "a bad flag value"),
    ],
)
def test_no_early_ray_where_the_command_wants_none_or_is_unclear(study_file, args, why):
    args = [a.replace("{file}", str(study_file)) for a in args]
    with pytest.raises(Exception) if why == "a bad flag value" else contextlib.nullcontext():
        assert early_key(args) is None, why


def test_no_early_ray_for_gpus_or_a_file_with_a_mistake(tmp_path, monkeypatch):
    gpu = small_study(tmp_path, name="gpu", cached_teacher=False, **{"search.resources.gpu": 1})
    assert early_key(["search", str(gpu)]) is None
    # the study starts its own local Ray then, with the CPUs and preloads of any local one
    assert _late_key(gpu) == (min(2, os.cpu_count()), (*_launch.PRELOAD, "autodistill.tasks.image_classification"))
    bad = small_study(tmp_path, name="bad", cached_teacher=False, **{"search.bogus": 1})
    with pytest.raises(Exception, match="search.bogus: unknown key"):
        early_key(["search", str(bad)])
    monkeypatch.setattr(_launch, "_early", [])
    start_early(["search", str(bad)])  # the CLI reports the mistake; no Ray was started for it
    start_early(["search", str(tmp_path / "missing.yaml")])
    assert _launch._early == []


def test_no_early_ray_where_the_results_folder_holds_the_study(study_file):
    key = early_key(["search", str(study_file)])
    config = load_config(study_file)
    config.results_dir.mkdir(parents=True)
    (config.results_dir / "study.db").write_bytes(b"")  # `search` refuses an existing study
    assert key is not None and early_key(["search", str(study_file)]) is None
    assert early_key(["search", str(study_file), "--name", "another"]) is not None


def test_every_task_module_is_the_task_s():
    for name, cls in TASK_TYPES.items():
        assert task_module(name) == cls.__module__


def test_a_different_early_ray_is_not_taken(monkeypatch):
    started = []
    monkeypatch.setattr(_launch, "_early", [RayStart(lambda: started.append(1), key=(2, ("torch",)))])
    assert take_early((1, ("torch",))) is None  # shut down (here: never initialised), not taken
    assert _launch._early == [] and started == [1]
    same = RayStart(lambda: None, key=(2, ("torch",)))
    monkeypatch.setattr(_launch, "_early", [same])
    assert take_early((2, ("torch",))) is same


def test_the_command_reads_a_study_file_without_importing_torch(study_file):
    code = f"import sys; from autodistill._launch import early_key; early_key(['search', {str(study_file)!r}]); print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().replace("'", '"')) == []


TAKEN_SCRIPT = """
import json, sys
import autodistill._launch as launch
taken = launch.take_early

def take(key):
    early = taken(key)
    print(json.dumps({"taken": early is not None, "torch_at_start": launch_torch}), flush=True)
    return early

launch.take_early = take  # before the runner imports it
real_start = launch.start_early
launch_torch = None

def start(args):
    global launch_torch
    launch_torch = "torch" in sys.modules
    real_start(args)

launch.start_early = start
import autodistill._command as command
command.start_early = start
sys.argv = ["autodistill", "search", sys.argv[1]]
command.main()
"""


@pytest.mark.integration
def test_a_search_takes_the_ray_started_before_torch(tmp_path):
    study = small_study(tmp_path, **{"search.trials": 2})
    out = subprocess.run([sys.executable, "-c", TAKEN_SCRIPT, str(study)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    seen = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("{")))
    assert seen == {"taken": True, "torch_at_start": False}
    assert "complete 2" in out.stdout
