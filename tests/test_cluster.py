"""A real two-node Ray cluster on this machine (`ray start --head` plus a second `ray start
--address=...`, each with one CPU) runs a small study through `--address`; the trials must
have run on both nodes. Token authentication stays on, as `ray start` sets it up."""

import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

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
        yield address, env, ids
    finally:
        for proc in reversed(nodes):  # --block: SIGTERM stops that node's processes, and only them
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


def test_study_runs_on_both_nodes_of_a_real_cluster(cluster, tmp_path):
    address, env, node_ids = cluster
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
