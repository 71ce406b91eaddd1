"""A real two-node Ray cluster on this machine (`ray start --head` plus a second `ray start
--address=...`, each with one CPU) runs a small study through `--address`; the trials must
have run on both nodes. Token authentication stays on, as `ray start` sets it up.

Then the worker node is lost while a trial runs on it (every process of that node killed at
once, as when a machine dies): the trial continues on the surviving node from its last epoch
checkpoint (``inflight/`` is on a filesystem both nodes share), and the study ends with
exactly the requested trials, none left RUNNING."""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers import free_port, small_study

from autodistill import load_trials

pytestmark = pytest.mark.integration  # real studies: real Ray, real Optuna storage

RAY = Path(sys.executable).with_name("ray")


@pytest.fixture
def cluster(tmp_path):
    if not RAY.exists() and not shutil.which("ray"):
        pytest.skip("the ray CLI is not installed")
    port = free_port()
    # the token every node and the driver share (what ~/.ray/auth_token holds on a real cluster)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    # a lost node is declared dead after 3 missed 1 s health checks (Ray's default waits ~15 s more)
    env.update(RAY_health_check_period_ms="1000", RAY_health_check_timeout_ms="1000", RAY_health_check_failure_threshold="3")
    common = ["--num-cpus=1", "--block", "--disable-usage-stats"]
    head = subprocess.Popen(
        [str(RAY), "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    nodes = [head]
    try:
        address = f"127.0.0.1:{port}"
        _wait_nodes(address, env, 1)
        nodes.append(
            subprocess.Popen(
                [str(RAY), "start", f"--address={address}", *common], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
        )
        ids = _wait_nodes(address, env, 2)
        yield address, env, ids, nodes[1]
    finally:
        for proc in reversed(nodes):  # --block: SIGTERM stops that node's processes, and only them
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(nodes):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)


def _wait_nodes(address, env, n, timeout=120):
    code = f"import ray; ray.init(address={address!r}, logging_level='ERROR'); print(' '.join(sorted(x['NodeID'] for x in ray.nodes() if x['Alive'])))"
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        ids = out.stdout.split()
        if out.returncode == 0 and len(ids) >= n:
            return ids
        time.sleep(1)
    raise AssertionError(f"the Ray cluster did not reach {n} node(s)")


@pytest.mark.slow  # the default suite's lost-node study also runs on both nodes and checks the same files
def test_study_runs_on_both_nodes_of_a_real_cluster(cluster, tmp_path):
    address, env, node_ids, _ = cluster
    cfg = small_study(tmp_path, "cluster", **{"search.trials": 4, "train.epochs": 8, "search.max_concurrent": 2})
    result = subprocess.run(
        [sys.executable, "-m", "autodistill", "search", str(cfg), "--address", address], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = tmp_path / "results" / "cluster"
    trials = load_trials(results)
    assert (trials["state"] == "COMPLETE").all() and len(trials) == 4
    assert set(trials["node"]) == set(node_ids)  # one CPU per node, two trials at once: both nodes worked
    for number in trials["number"]:
        assert (results / "trials" / f"{int(number):04d}" / "student.pt").is_file()


def _kill_session(sid: int) -> int:
    """SIGKILL every process of session ``sid`` (a node: `ray start`, its raylet and the
    workers it started, which Ray puts in process groups of their own); how many there were."""
    killed = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # after "pid (comm)": state, ppid, pgrp, session
            try:
                os.kill(int(stat.parent.name), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def test_a_lost_node_s_trial_continues_on_the_surviving_node(cluster, tmp_path):
    address, env, node_ids, worker = cluster
    cfg = small_study(tmp_path, "lost", **{"search.trials": 4, "train.epochs": 10, "search.max_concurrent": 2, "search.max_failures": 1})
    results = tmp_path / "results" / "lost"
    driver = subprocess.Popen(
        [sys.executable, "-m", "autodistill", "search", str(cfg), "--address", address],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # both nodes busy, each trial past an epoch: one of the two running trials is the worker node's
        deadline = time.time() + 300
        while len(list((results / "inflight").glob("*.pt"))) < 2:
            assert driver.poll() is None and time.time() < deadline, "two trials never ran at once"
            time.sleep(0.05)
        assert _kill_session(worker.pid) >= 3  # `ray start`, its raylet, the trial's worker, ...
        out, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out[-4000:]
    trials = load_trials(results).set_index("number")
    assert len(trials) == 4 and (trials["state"] == "COMPLETE").all(), trials
    stored = optuna.load_study(study_name="lost", storage=f"sqlite:///{results / 'study.db'}").trials
    assert sorted(t.state.name for t in stored) == ["COMPLETE"] * 4  # nothing left RUNNING
    assert sorted(trials["restarts"]) == [0, 0, 0, 1], trials["restarts"]  # the lost node's trial, and only it
    (lost,) = trials.index[trials["restarts"] == 1]
    after = int(trials.loc[lost, "restarted_from_epoch"])
    assert 1 <= after < 10 and trials.loc[lost, "epochs_done"] == 10
    lost_node = (set(node_ids) - {trials.loc[lost, "node"]}).pop()  # it finished on the other node
    assert (trials["node"] != lost_node).sum() >= 2  # the trials after the loss ran on the surviving node
    curve = {t.number: t for t in stored}[lost].user_attrs["accuracy_curve"]
    assert len(curve) == 10  # the epochs before the loss kept, none counted twice
    text = " ".join(out.split())
    assert f"trial {lost}: the trial's worker failed" in text and "restarting it (restart 1 of 1)" in text, text[-3000:]
    assert f"its worker was restarted 1 time(s); it continued from its epoch {after} checkpoint" in text
    for number in trials.index:  # every trial's checkpoint came back to the driver's results folder
        assert (results / "trials" / f"{int(number):04d}" / "student.pt").is_file()
    assert not (results / "inflight").exists() or not list((results / "inflight").iterdir())
    assert "Traceback" not in out
