"""A study in a real PostgreSQL server (started here on loopback from the Debian package's
binaries) that rides out a short outage of the server, then resumed with more trials from
that storage alone; a longer outage stops the study with one line, and resume finishes it."""

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from helpers import free_port, run_cli, run_cli_here, small_study

pytestmark = pytest.mark.integration  # real studies: real Ray, real Optuna storage


def _bindir():
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists() and Path(candidate, "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@pytest.fixture
def postgres():
    pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]' (in the test extra)")
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (Debian: apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="autodistill-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the package's user
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = root / "data"

    def run(*args):
        subprocess.run([*as_user, *map(str, args)], check=True, capture_output=True, timeout=120)

    def start():
        run(bindir / "pg_ctl", "-D", data, "-l", root / "log", "-w", "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")

    def stop():  # the server goes away at once, as in a crash or a lost network
        run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")

    try:
        run(bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        start()
        run(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "autodistill")
        yield SimpleNamespace(url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/autodistill", start=start, stop=stop)
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def _cli(*args):
    return subprocess.Popen([sys.executable, "-m", "autodistill", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _communicate(proc, timeout):
    """``proc.communicate``; a command still running at ``timeout`` is made to print every
    thread's stack (the CLI's SIGUSR2) before it is killed, and the test fails with them."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR2)
        time.sleep(3)
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"still running after {timeout} s; its output ends:\n{out[-3000:]}\nits stacks:\n{err[-12000:]}") from None


def _wait_for_trials(url, name, count, proc, state=None, timeout=300):
    """Until the study in ``url`` has ``count`` trials (in ``state``, if given)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            trials = optuna.load_study(study_name=name, storage=url).trials
            if len([t for t in trials if state is None or t.state.name == state]) >= count:
                return
        except KeyError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the study never had {count} trials")


def test_study_in_postgres_rides_out_outages_then_resumes_from_it(postgres, tmp_path):
    url = postgres.url
    cfg = small_study(tmp_path, "pg", **{"search.trials": 3, "execution.storage": url, "execution.storage_retry_s": 10})
    # a short outage (a server restart) while trials run: retried, the study finishes as if nothing happened
    proc = _cli("search", cfg)
    _wait_for_trials(url, "pg", 1, proc, state="COMPLETE")  # the next trials run: they end during the outage
    postgres.stop()
    time.sleep(3)  # the running trials end meanwhile: their outcomes wait for the server
    postgres.start()
    out, err = _communicate(proc, 600)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    said = " ".join(out.split())  # the console wraps long lines
    assert f"the Optuna storage {url} is unreachable (" in said and "retrying for up to 10 s" in said and "is back after" in said, out + err[-3000:]
    results = tmp_path / "results" / "pg"
    assert not (results / "study.db").exists()  # the trials live in PostgreSQL only
    study = optuna.load_study(study_name="pg", storage=url)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert study.metric_names == ["accuracy", "params", "latency_ms"]

    again = run_cli_here("search", cfg)  # the storage already holds the study: refused
    assert again.returncode == 2 and "already holds study 'pg' with 3 trial(s)" in again.stderr

    # a longer outage than execution.storage_retry_s: one line naming the storage, exit 4
    proc = _cli("resume", results, "--trials", "2")
    _wait_for_trials(url, "pg", 4, proc)
    postgres.stop()
    try:
        out, err = _communicate(proc, 240)
    finally:
        proc.kill()
        postgres.start()
    assert proc.returncode == 4, out[-3000:] + err[-3000:]
    assert err.startswith(f"error: the Optuna storage {url} is unreachable (") and len(err.strip().splitlines()) == 1, err
    assert err.strip().endswith(f"retried for 10 s; once it is back, run: autodistill resume {results}"), err

    more = run_cli("resume", results)  # the server is back: resume finishes the requested 5
    assert more.returncode == 0, more.stdout[-3000:] + more.stderr[-3000:]
    study = optuna.load_study(study_name="pg", storage=url)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 5 and "RUNNING" not in states, states
    assert len((results / "trials.csv").read_text().strip().splitlines()) == 1 + len(states)
