"""A full disk ends in one line and loses nothing: real studies whose writes run out of space
(injected with AUTODISTILL_INJECT_ENOSPC at one kind of write each, and on a real 8 MB tmpfs
where this machine lets the test mount one). The command exits with 3 and names the file and
what to run; once space is back, that command finishes the study with exactly the requested
trials."""

import json
import subprocess

import optuna
import pytest
from helpers import run_cli, run_cli_here, small_study

from autodistill._errors import EXIT_DISK_FULL

pytestmark = pytest.mark.integration  # real studies: real Ray, real Optuna storage


def _states(results):
    trials = optuna.load_study(study_name=results.name, storage=f"sqlite:///{results / 'study.db'}").get_trials()
    return [(t.number, t.state.name, bool(t.user_attrs.get("interrupted"))) for t in trials]


def _one_line(run):
    lines = [line for line in run.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    return lines[0]


def test_full_disk_at_an_epoch_checkpoint_then_at_the_report_then_at_an_export(tmp_path, monkeypatch):
    cfg = small_study(tmp_path, "full", **{"search.trials": 2, "train.epochs": 2, "search.max_concurrent": 1})
    results = tmp_path / "results" / "full"

    # a trial's epoch checkpoint: the trial is interrupted and the study stops
    run = run_cli("search", cfg, env={"AUTODISTILL_INJECT_ENOSPC": "0001.pt"})  # trial 1's first epoch checkpoint
    assert run.returncode == EXIT_DISK_FULL, run.stderr[-3000:]
    line = _one_line(run)
    assert line.startswith("error: no space left on device while writing ") and "inflight/0001.pt" in line
    assert line.endswith(f"free space, then run: autodistill resume {results}")
    states = _states(results)
    assert (1, "FAIL", True) in states and sum(s == "COMPLETE" for _, s, _ in states) == 1  # trial 0 done, trial 1 interrupted

    # the report, once every trial is done: the trials are safe in the study, nothing is half-written
    run = run_cli("resume", results, env={"AUTODISTILL_INJECT_ENOSPC": "report.html"})
    assert run.returncode == EXIT_DISK_FULL, run.stderr[-3000:]
    line = _one_line(run)
    assert line.startswith("error: no space left on device while writing ") and "report.html" in line
    assert line.endswith(f"free space, then run: autodistill resume {results}")
    assert [s for _, s, interrupted in _states(results) if not interrupted] == ["COMPLETE"] * 2  # trial 1 retried
    assert not (results / "report.html").exists() and not list(results.glob(".report.html*"))

    again = run_cli("resume", results)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [s for _, s, interrupted in _states(results) if not interrupted] == ["COMPLETE"] * 2  # nothing re-run, nothing lost
    assert (results / "report.html").is_file() and json.loads((results / "study.json").read_text())["trials"]["COMPLETE"] == 2

    # an export (in this process: it starts no Ray): the folder appears whole or not at all
    with monkeypatch.context() as patch:
        patch.setenv("AUTODISTILL_INJECT_ENOSPC", "model.json")
        export = run_cli_here("export", results, "--pick", "accuracy", "--format", "pt")
    assert export.returncode == EXIT_DISK_FULL, export.stderr[-3000:]
    assert "no space left on device while writing" in _one_line(export) and _one_line(export).endswith("free space, then run the export again")
    assert not (results / "export").exists() or not any((results / "export").iterdir())
    assert run_cli_here("export", results, "--pick", "accuracy", "--format", "pt").returncode == 0  # (the ONNX path is tested elsewhere)
    assert sorted(p.name for p in next((results / "export").iterdir()).iterdir()) == ["model.json", "spec.json", "student.pt"]


def test_full_disk_at_the_teacher_cache_leaves_no_study_folder(tmp_path):
    cfg = small_study(tmp_path, "teacher", cached_teacher=False, **{"search.trials": 1})
    run = run_cli("search", cfg, env={"AUTODISTILL_INJECT_ENOSPC": "teacher.pt"})
    assert run.returncode == EXIT_DISK_FULL, run.stderr[-3000:]
    assert "teacher.pt" in _one_line(run) and _one_line(run).endswith("free space, then run the same search again")
    assert not (tmp_path / "results" / "teacher").exists()
    assert not list((tmp_path / "results" / ".teachers").rglob("teacher.pt"))


@pytest.mark.slow  # the tests above run out of space at each of these writes, by an injected ENOSPC (a real OSError)
def test_a_real_full_tmpfs(tmp_path):
    """Writes that really run out of space (a study on an 8 MB tmpfs) end the same way."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip() or made.returncode}")
    try:
        cfg = small_study(tmp_path, "tiny", **{"search.trials": 2, "train.epochs": 2, "execution.results": str(mount)})
        (mount / "filler").write_bytes(b"\0" * (8 * 2**20 - 300 * 2**10))  # leave ~300 KB: the teacher fits, the study does not
        run = run_cli("search", cfg)
        assert run.returncode == EXIT_DISK_FULL, run.stderr[-3000:]
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
