"""The driver's SQLite file in write-ahead-log mode while a study writes it, one plain file
again afterwards, on real Optuna storage."""

import sqlite3
import subprocess
import sys
import time

import optuna
import pytest

from autodistill._storage import end_write_ahead
from autodistill.results import open_study, rdb_storage


@pytest.fixture(autouse=True)
def _ended():
    yield
    end_write_ahead()  # a failed test leaves no engine switched for the next one


def _journal(db):
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]


def _write_trials(study, n):
    for i in range(n):
        trial = study.ask()
        for key in range(20):  # a trial's metrics: a commit each
            trial.set_user_attr(f"m{key}", float(i))
        study.tell(trial, [0.5])


def test_the_drivers_file_is_written_ahead_and_is_one_plain_file_after_the_study(tmp_path):
    db = tmp_path / "study.db"
    study = open_study(f"sqlite:///{db}", "s", ["max"], writer=True)
    _write_trials(study, 3)
    assert _journal(db) == "wal" and (tmp_path / "study.db-wal").exists()
    backend = rdb_storage(f"sqlite:///{db}")  # a reader (optuna-dashboard, trials.csv) sees every commit
    assert len(optuna.load_study(study_name="s", storage=backend).trials) == 3
    backend.engine.dispose()
    with study._storage._backend.engine.connect() as conn:  # the driver's commits do not wait for the disk
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL

    end_write_ahead()
    assert _journal(db) == "delete"
    assert not (tmp_path / "study.db-wal").exists() and not (tmp_path / "study.db-shm").exists()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:  # as a read-only copy opens it
        assert conn.execute("SELECT count(*) FROM trial_user_attributes").fetchone()[0] == 60
    reopened = open_study(f"sqlite:///{db}", "s")
    assert [t.state.name for t in reopened.trials] == ["COMPLETE"] * 3


def test_a_reader_keeps_the_file_open_the_study_still_ends_at_once_and_nothing_is_lost(tmp_path):
    db = tmp_path / "study.db"
    study = open_study(f"sqlite:///{db}", "s", ["max"], writer=True)
    _write_trials(study, 2)
    reader = sqlite3.connect(db, timeout=60, isolation_level=None)  # optuna-dashboard, mid-read
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM trials").fetchone()[0] == 2
    started = time.monotonic()
    end_write_ahead()
    assert time.monotonic() - started < 5  # not the 60-s lock wait of a writer
    reader.execute("COMMIT")
    assert reader.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0] == 2
    reader.close()  # the last connection: SQLite folds the log into the file and removes it
    assert not (tmp_path / "study.db-wal").exists()
    assert len(open_study(f"sqlite:///{db}", "s").trials) == 2


def test_a_killed_writer_loses_no_commit(tmp_path):
    db = tmp_path / "study.db"
    script = (
        "import os, optuna\n"
        "from autodistill.results import open_study\n"
        f"study = open_study({f'sqlite:///{db}'!r}, 's', ['max'], writer=True)\n"
        "for i in range(5):\n"
        "    t = study.ask(); t.set_user_attr('accuracy_curve', [0.1] * (i + 1)); study.tell(t, [0.1 * i])\n"
        "study.ask()\n"  # a trial left RUNNING
        "os._exit(0)\n"  # no teardown: the log is still beside the file
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert (tmp_path / "study.db-wal").exists()
    trials = open_study(f"sqlite:///{db}", "s").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5 + ["RUNNING"]
    assert trials[4].user_attrs["accuracy_curve"] == [0.1] * 5 and trials[4].values == [pytest.approx(0.4)]


def test_readers_and_other_databases_are_left_as_they_are(tmp_path):
    db = tmp_path / "read.db"
    open_study(f"sqlite:///{db}", "s", ["max"])  # not the driver: no switch
    assert _journal(db) == "delete"
    memory = open_study("sqlite://", "m", ["max"], writer=True)  # no file to switch
    _write_trials(memory, 1)
    end_write_ahead()
    assert len(memory.trials) == 1
