"""Resume after a real driver is killed (real Ray, real sqlite storage), the one-writer lock,
and training that continues from an epoch checkpoint exactly."""

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time

import optuna
import pytest
import torch
from helpers import run_cli, small_study

from autodistill import parse_config
from autodistill._lock import StudyLock, StudyLocked
from autodistill.data import load_dataset
from autodistill.distill import train
from autodistill.results import open_study, rdb_storage
from autodistill.students import build_student, make_spec


@pytest.mark.integration
def test_second_writer_is_refused_with_the_holder_named(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from autodistill._lock import StudyLock; "
            f"StudyLock({str(tmp_path)!r}, log=print).acquire(); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StudyLocked, match=rf"{tmp_path} is in use by pid {holder.pid} on .*since"):
            StudyLock(tmp_path).acquire()
        # the CLI says the same in one line, before writing anything
        cfg = small_study(tmp_path, "held", **{"execution.results": str(tmp_path.parent)})
        cfg.write_text(cfg.read_text().replace("name: held", f"name: {tmp_path.name}"))
        result = run_cli("search", cfg)
        assert result.returncode == 2 and f"is in use by pid {holder.pid}" in result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    messages = []
    with StudyLock(tmp_path, log=messages.append):  # the holder died: its lock is stale
        pass
    assert len(messages) == 1 and f"stale lock of {tmp_path} left by pid {holder.pid}" in messages[0]
    with StudyLock(tmp_path, log=messages.append):  # a clean release leaves nothing to report
        pass
    assert len(messages) == 1


def test_training_continues_from_an_epoch_checkpoint_exactly():
    cfg = parse_config({"train": {"epochs": 4, "lr": 0.01}, "student": {"cnn": {"widths": [8, 16], "depths": [1, 1], "dropout": 0.1}}})
    data = load_dataset(cfg.data)
    spec = make_spec("cnn", cfg.student.cnn.model_dump(mode="json"), data)
    states = []
    whole = build_student(spec)
    history = train(whole, data, cfg.train, seed=3, on_checkpoint=lambda s: states.append(copy.deepcopy(s)))
    assert [s["epoch"] for s in states] == [1, 2, 3]  # none after the last epoch
    continued = build_student(spec)
    rest = train(continued, data, cfg.train, seed=3, resume=states[1])
    assert [h.epoch for h in rest] == [1, 2, 3, 4] and rest[:2] == history[:2]
    for a, b in zip(whole.state_dict().values(), continued.state_dict().values()):
        assert torch.equal(a, b)


def test_training_with_projectors_continues_from_a_checkpoint_exactly():
    from autodistill.distill import predict_logits
    from autodistill.targets import TeacherTargets

    cfg = parse_config(
        {"train": {"epochs": 3, "lr": 0.01}, "distill": {"alpha": 0.5, "feature_weight": 1.0, "feature_stages": "all", "attention_weight": 10.0}}
    )
    data = load_dataset(cfg.data)
    teacher = build_student(make_spec("resnet", {"widths": [8, 16, 32], "depths": [1, 1, 1]}, data), seed=1).eval()
    targets = TeacherTargets(logits=predict_logits(teacher, data, "train"), live=teacher)
    spec = make_spec("cnn", {"widths": [8, 16], "depths": [1, 1]}, data)
    states = []
    whole = build_student(spec, seed=0)
    history = train(whole, data, cfg.train, cfg.distill, targets, seed=3, on_checkpoint=lambda s: states.append(copy.deepcopy(s)))
    assert states[0]["recipe"] and all(h.extra["loss_feat"] > 0 and h.extra["loss_att"] > 0 for h in history)
    continued = build_student(spec, seed=0)
    rest = train(continued, data, cfg.train, cfg.distill, targets, seed=3, resume=states[0])
    same = lambda h: (h.epoch, h.accuracy, h.loss, h.loss_ce, h.loss_kd, h.extra["loss_feat"], h.extra["loss_att"])  # noqa: E731
    assert [same(h) for h in rest] == [same(h) for h in history]
    for a, b in zip(whole.state_dict().values(), continued.state_dict().values()):
        assert torch.equal(a, b)


def test_processes_opening_a_new_study_file_at_once_all_succeed(tmp_path):
    # CI saw the driver die when this file's poller opened study.db in the same instant:
    # both created the schema and the loser's INSERT of the alembic version failed.
    # Threads racing on a fresh file reproduce it with plain RDBStorage every time.
    for attempt in range(3):
        url = f"sqlite:///{tmp_path / f'race{attempt}.db'}"
        barrier, errors = threading.Barrier(6), []

        def open_it(url=url, barrier=barrier, errors=errors):
            barrier.wait()
            try:
                rdb_storage(url)
            except Exception as e:  # noqa: BLE001 - any failure is the bug
                errors.append(repr(e))

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        study = open_study(url, "s", ["max"])
        assert study.directions[0].name == "MAXIMIZE"


def _wait(db, name, predicate, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the study ended (exit {proc.returncode}) before it could be interrupted:\n{proc.stdout.read()[-3000:]}")
        if db.exists():
            try:
                trials = optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials(deepcopy=False)
            except Exception:  # created but not yet initialised
                trials = []
            if predicate(trials):
                return trials
        time.sleep(0.3)
    raise AssertionError("timed out waiting for the study")


def _states(trials):
    return [t.state.name for t in trials]


@pytest.mark.integration
def test_resume_after_sigkill_and_sigterm_ends_with_exactly_the_requested_trials(tmp_path):
    # 30-epoch students take several seconds each: long enough to interrupt mid-trial
    cfg = small_study(tmp_path, "killed", **{"search.trials": 4, "train.epochs": 30})
    results = tmp_path / "results" / "killed"
    db = results / "study.db"
    # every epoch 0.1 s longer: a fast machine ran a 30-epoch trial in 1 s, and the resumed
    # run ended before the test could interrupt it
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AUTODISTILL_INJECT_FAULTS": "*:slow"}
    driver = subprocess.Popen([sys.executable, "-m", "autodistill", "search", str(cfg)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # 1. SIGKILL once a trial is complete and another is mid-way, with an epoch checkpoint
    _wait(
        db,
        "killed",
        lambda ts: "COMPLETE" in _states(ts) and any(t.state.name == "RUNNING" and 2 <= len(t.user_attrs.get("accuracy_curve", [])) <= 20 for t in ts),
        driver,
    )
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    stale = [t.number for t in optuna.load_study(study_name="killed", storage=f"sqlite:///{db}").trials if t.state.name == "RUNNING"]
    assert stale

    # 2. resume, and stop that with SIGTERM (the driver alone) once it has a trial past an epoch:
    # the continuation or a new one (a trial killed at epoch 29 continues for 1 epoch, which
    # CI once saw end before the poller looked); the stale trials stay RUNNING until resume
    # records them, so they do not count
    resumed = subprocess.Popen(
        [sys.executable, "-m", "autodistill", "resume", str(results)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    _wait(
        db,
        "killed",
        lambda ts: any(t.number not in stale and t.state.name == "RUNNING" and len(t.user_attrs.get("accuracy_curve", [])) >= 1 for t in ts),
        resumed,
    )
    resumed.send_signal(signal.SIGUSR2)  # every thread's stack to stderr, and the study goes on
    time.sleep(0.2)
    resumed.send_signal(signal.SIGTERM)
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 130, out
    assert "(most recent call first):" in out and "autodistill/tune/runner.py" in out, out
    assert "left running by a stopped driver" in out and "continues from its epoch" in out
    # a fast machine can finish the last trial within the second before the SIGTERM: then it
    # reaches the report, and ends as Ctrl-C would there
    stopped_trials = "SIGTERM: stopping the running trials" in out
    assert stopped_trials or ("[4/4] trial" in out and f"interrupted; `autodistill resume {results}` continues the study" in out), out
    assert "autodistill resume" in out

    # 3. resume to the end (on a loaded machine the SIGTERMed run can have finished its last
    # trial just before the signal: then there is nothing left to run and no progress line)
    before = optuna.load_study(study_name="killed", storage=f"sqlite:///{db}").trials
    left = 4 - sum(t.state.name == "COMPLETE" and not t.user_attrs.get("interrupted") for t in before)
    final = run_cli("resume", results, env={"AUTODISTILL_INJECT_FAULTS": "*:slow"})
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    trials = optuna.load_study(study_name="killed", storage=f"sqlite:///{db}").trials
    own = [t for t in trials if not t.user_attrs.get("interrupted")]
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    assert len(own) == 4 and all(t.state.name == "COMPLETE" for t in own)
    assert all(t.state.name == "FAIL" for t in interrupted) and set(stale) <= {t.number for t in interrupted}
    # every interrupted trial that had started was retried exactly once, with its parameters
    # (one killed while its parameters were being sampled never started: it is not retried)
    started = [t for t in trials if "ray_trial_id" in t.user_attrs]
    retries = [t.user_attrs["continues"] for t in started if "continues" in t.user_attrs]
    assert sorted(retries) == sorted(t.number for t in interrupted if "ray_trial_id" in t.user_attrs)
    for t in started:
        if "continues" in t.user_attrs:
            assert t.params == trials[t.user_attrs["continues"]].params
    # a continued trial has the whole 30-epoch curve, and its checkpoint was copied
    for t in own:
        assert len(t.user_attrs["accuracy_curve"]) == 30
        assert (results / "trials" / f"{t.number:04d}" / "student.pt").is_file()
    summary = json.loads((results / "study.json").read_text())
    assert summary["trials"]["COMPLETE"] == 4 and summary["trials"]["INTERRUPTED"] == len(interrupted)
    assert not (results / "inflight").exists()
    assert ("[4/4] trial" in final.stdout) == (left > 0), (left, final.stdout[-2000:])
    # extending a finished sqlite study (resume --trials N): tests/test_startup.py


REPORT_INTERRUPTED = """
import os, signal, sys, time
import autodistill.tune.runner as runner

def interrupted(*args, **kwargs):  # a SIGTERM once the trials are done, while the report is written
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)

runner.finalize = interrupted
sys.argv = ["autodistill", "search", sys.argv[1]]
from autodistill._command import main
main()
"""


@pytest.mark.integration
def test_a_sigterm_outside_the_trials_ends_like_ctrl_c_and_resume_writes_the_report(tmp_path):
    # The study's SIGTERM handler covers the trials only; before it, a SIGTERM killed the
    # process outright (exit -15, no word of what to do)
    cfg = small_study(tmp_path, "late", **{"search.trials": 2})
    results = tmp_path / "results" / "late"
    proc = subprocess.run([sys.executable, "-c", REPORT_INTERRUPTED, str(cfg)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == f"interrupted; `autodistill resume {results}` continues the study", proc.stderr[-2000:]
    assert not (results / "study.json").exists()
    done = run_cli("resume", results)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((results / "study.json").read_text())
    assert summary["trials"]["COMPLETE"] == 2 and (results / "report.html").is_file()
    assert len(optuna.load_study(study_name="late", storage=f"sqlite:///{results / 'study.db'}").trials) == 2  # nothing ran again


@pytest.mark.integration
def test_a_sigterm_to_the_whole_process_group_ends_at_once_and_resume_finishes(tmp_path):
    # `timeout`, `systemctl stop` and a container's stop signal Ray's processes too: its GCS
    # and raylet then take ~10 s to go, and the run waited for them (15 s in all) before it
    # gave up; now the study sees Ray's dashboard and log monitor gone and exits at once
    cfg = small_study(tmp_path, "group", **{"search.trials": 3, "train.epochs": 30})
    results = tmp_path / "results" / "group"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AUTODISTILL_INJECT_FAULTS": "*:slow"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "autodistill", "search", str(cfg)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    _wait(results / "study.db", "group", lambda ts: any(t.state.name == "RUNNING" and len(t.user_attrs.get("accuracy_curve", [])) >= 1 for t in ts), driver)
    os.killpg(driver.pid, signal.SIGTERM)
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, out[-3000:]
    assert out.strip().splitlines()[-1] == (
        f"Ray's own processes got the signal too and have stopped: exiting now; `autodistill resume {results}` retries the running trials"
    ), out[-3000:]
    final = run_cli("resume", results)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    own = [t for t in optuna.load_study(study_name="group", storage=f"sqlite:///{results / 'study.db'}").trials if not t.user_attrs.get("interrupted")]
    assert len(own) == 3 and all(t.state.name == "COMPLETE" for t in own)
