"""A study in a real PostgreSQL server (started here on loopback from the Debian package's
binaries), then resumed with more trials from that storage alone."""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest
from helpers import free_port, run_cli, small_study

pytestmark = pytest.mark.integration  # real studies: real Ray, real Optuna storage


def _bindir():
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists() and Path(candidate, "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@pytest.fixture
def postgres_url():
    pytest.importorskip("psycopg2", reason="pip install psycopg2-binary (in the test extra)")
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

    try:
        run(bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        run(bindir / "pg_ctl", "-D", data, "-l", root / "log", "-w", "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
        run(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "autodistill")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/autodistill"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def test_study_in_postgres_then_resumed_from_it(postgres_url, tmp_path):
    cfg = small_study(tmp_path, "pg", **{"search.trials": 3, "execution.storage": postgres_url})
    first = run_cli("search", cfg)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    results = tmp_path / "results" / "pg"
    assert not (results / "study.db").exists()  # the trials live in PostgreSQL only
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert study.metric_names == ["accuracy", "params", "latency_ms"]

    again = run_cli("search", cfg)  # the storage already holds the study: refused
    assert again.returncode == 2 and "already holds study 'pg' with 3 trial(s)" in again.stderr

    more = run_cli("resume", results, "--trials", "2")
    assert more.returncode == 0, more.stdout[-3000:] + more.stderr[-3000:]
    assert "3 of 5 trial(s) already finished; 2 to run" in more.stdout
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3, 4]
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert len((results / "trials.csv").read_text().strip().splitlines()) == 1 + 5
