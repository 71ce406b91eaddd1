import atexit
import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import yaml


def run_cli(*args, timeout=600, cwd=None, env=None):
    """``autodistill <args>`` in a subprocess; ``env`` adds variables to this process's."""
    full_env = {**os.environ, **env} if env else None
    return subprocess.run([sys.executable, "-m", "autodistill", *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=full_env)


def run_cli_here(*args):
    """The CLI in this process (typer's CliRunner), for error paths that need no subprocess:
    the same exit code, stdout and stderr as :func:`run_cli`, without a Python start-up."""
    from typer.testing import CliRunner

    from autodistill.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


def small_study(tmp_path, name="tiny", cached_teacher=True, **overrides):
    """A digits study small enough for CI: a tiny teacher, 3-epoch students, 4 trials.

    ``cached_teacher``: its results folder starts with :func:`shared_teachers` (the default
    teacher trained, its costs and outputs cached), so a study of the default teacher loads it
    instead of training it; one whose teacher, data or augmentation differ trains its own.
    A test of what training the teacher does or writes passes ``False``."""
    raw = {
        "name": name,
        "data": {"dataset": "digits"},
        "teacher": {"arch": {"family": "cnn", "widths": [16, 32], "depths": [1, 1]}, "train": {"epochs": 4}},
        "student": {
            "family": {"choice": ["cnn", "mobilenet"]},
            "cnn": {"widths": [8, 16], "depths": [1, 1], "width_mult": {"low": 0.5, "high": 1.0, "step": 0.25}},
            "mobilenet": {"widths": [8, 16], "depths": [1, 1], "expand_ratio": {"low": 2, "high": 3}},
        },
        "distill": {"alpha": {"low": 0.3, "high": 0.9}, "temperature": {"schedule": {"choice": ["constant", "cosine"]}, "start": 4.0}},
        "train": {"epochs": 3, "lr": {"low": 3e-3, "high": 1e-2, "log": True}},
        # a save after every epoch: the tests of resume and faults interrupt trials mid-way
        "search": {"trials": 4, "max_concurrent": 2, "seed": 0, "checkpoint_interval_s": 0},
        "latency": {"warmup": 2, "repeats": 5, "final_repeats": 10},
        "execution": {"results": str(tmp_path / "results")},
    }
    path = write_study(tmp_path / f"{name}.yaml", raw, overrides)
    if cached_teacher:
        shutil.copytree(shared_teachers(), Path(raw["execution"]["results"]) / ".teachers", dirs_exist_ok=True)
    return path


@functools.cache
def shared_teachers() -> Path:
    """A ``.teachers`` folder holding :func:`small_study`'s default teacher, trained once per
    test process the way a study trains it, with its costs and its outputs on the training
    set: most of the suite's studies use that teacher, and each would train it again
    (3-4 s of every ``autodistill search``)."""
    from autodistill.loading import load_config
    from autodistill.tasks import get_task

    base = Path(tempfile.mkdtemp(prefix="autodistill-shared-teacher-"))
    atexit.register(shutil.rmtree, base, True)
    config = load_config(small_study(base, "shared", cached_teacher=False))
    task = get_task(config.task)
    data = task.load_data(config)
    teachers = task.prepare_teachers(config, data, lambda line: None)
    task.teacher_targets(config, data, teachers, lambda line: None)
    return base / "results" / ".teachers"


def write_study(path, raw, overrides):
    """``raw`` with each dotted key of ``overrides`` set, written as YAML to ``path``."""
    from autodistill.config import set_overrides

    set_overrides(raw, overrides)
    path.write_text(yaml.safe_dump(raw))
    return path


def check_one_line_error(result, expected, tmp_path):
    """A CliRunner result of bad input: exit code 2, one line ``error: ...`` holding
    ``expected``, no traceback, nothing under ``tmp_path/results`` but the shared teacher cache."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    err = result.stderr
    assert err.startswith("error: ") and expected in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err + result.stdout
    results = tmp_path / "results"
    assert not results.exists() or not [p for p in results.iterdir() if p.name != ".teachers"]


def free_port():
    """A TCP port free on loopback right now (for servers a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
