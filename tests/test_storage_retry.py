"""The Optuna storage server's outages: calls that cannot reach it are retried with backoff
for a bounded time, then end in one line naming the storage (no PostgreSQL needed here: the
real server is stopped and restarted mid-study in tests/test_postgres.py)."""

import errno
import sqlite3

import optuna
import pytest
import sqlalchemy.exc

from autodistill import _storage
from autodistill._errors import StorageUnavailable


def _lost():
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception('connection to server at "127.0.0.1", port 5432 failed: Connection refused'))


class Flaky:
    """An inner storage whose first ``failures`` calls find the server gone."""

    def __init__(self, failures, error=_lost):
        self.failures, self.error, self.calls = failures, error, 0

    def get_all_studies(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error()
        return ["study"]


@pytest.fixture
def clock(monkeypatch):
    """time.monotonic advanced by each sleep: the backoff is checked without waiting."""
    now = [1000.0]
    slept = []
    monkeypatch.setattr(_storage.time, "monotonic", lambda: now[0])

    def sleep(s):
        slept.append(s)
        now[0] += s

    monkeypatch.setattr(_storage.time, "sleep", sleep)
    return slept


URL = "postgresql+psycopg://user:secret@db.example:5432/autodistill"


def test_an_outage_shorter_than_the_window_is_ridden_out_with_backoff(clock):
    lines = []
    storage = _storage.retrying(Flaky(4), URL, 30.0, lines.append)
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert storage.get_all_studies() == ["study"]
    assert clock == [0.5, 1.0, 2.0, 4.0]  # exponential backoff
    assert lines[0].startswith("the Optuna storage postgresql+psycopg://user:***@db.example:5432/autodistill is unreachable (")
    assert "retrying for up to 30 s" in lines[0] and lines[1].endswith("is back after 8 s")
    assert "secret" not in " ".join(lines)


def test_an_outage_longer_than_the_window_is_one_error_naming_the_storage(clock):
    storage = _storage.retrying(Flaky(100), URL, 10.0, lambda line: None)
    with pytest.raises(
        StorageUnavailable, match=r"^the Optuna storage postgresql\+psycopg://user:\*\*\*@db.example:5432/autodistill is unreachable .*retried for 10 s$"
    ):
        storage.get_all_studies()
    assert sum(clock) == pytest.approx(10.0)  # the last wait is cut to the window
    with pytest.raises(StorageUnavailable):  # later calls of the same outage fail at once
        storage.get_all_studies()
    assert sum(clock) == pytest.approx(10.0)


@pytest.mark.parametrize(
    "error",
    [
        lambda: sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key")),
        lambda: ValueError("not a storage problem"),
        lambda: sqlalchemy.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full")),
        lambda: sqlalchemy.exc.OperationalError("INSERT", {}, OSError(errno.ENOSPC, "No space left on device")),
    ],
)
def test_other_errors_are_not_retried(clock, error):
    inner = Flaky(1, error)
    with pytest.raises(Exception) as caught:
        _storage.retrying(inner, URL, 30.0, lambda line: None).get_all_studies()
    assert not isinstance(caught.value, StorageUnavailable) and inner.calls == 1 and clock == []


def test_every_storage_method_goes_through_the_retry():
    names = [n for n in dir(optuna.storages.BaseStorage) if not n.startswith("_") and callable(getattr(optuna.storages.BaseStorage, n))]
    storage = _storage.retrying(object(), URL, 1.0)
    assert "create_new_trial" in names and "set_trial_state_values" in names
    for name in names:
        assert getattr(type(storage), name).__name__ == "<lambda>", name


def test_a_server_that_accepts_but_never_answers_ends_in_the_one_error(monkeypatch):
    """A storage host that went away mid-connection (a listener that never speaks): libpq's
    connect_timeout ends each attempt, so the study still stops with one line rather than
    hanging. The real psycopg driver, against a real socket."""
    import socket
    import time

    pytest.importorskip("psycopg")
    from autodistill import results

    assert results._libpq_timeouts("postgresql+psycopg://u@h/db")["connect_timeout"] == 10
    assert results._libpq_timeouts("postgresql://u@h/db?connect_timeout=30").get("connect_timeout") is None  # the URL's own wins
    assert results._libpq_timeouts("mysql+pymysql://u@h/db") == {}
    monkeypatch.setitem(results.LIBPQ_TIMEOUTS, "connect_timeout", 2)  # libpq's least
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    lines = []
    url = f"postgresql+psycopg://u@127.0.0.1:{silent.getsockname()[1]}/x"
    started = time.monotonic()
    try:
        with pytest.raises(StorageUnavailable, match="is unreachable .*timeout expired.*retried for 1 s$"):
            results.rdb_storage(url, retry_s=1.0, log=lines.append)
    finally:
        silent.close()
    assert time.monotonic() - started < 15 and "retrying for up to 1 s" in lines[0]


def test_optunas_fallback_warning_of_a_lost_connection_is_dropped_and_others_kept():
    """Optuna's trial query takes any OperationalError for too many IN variables, warns
    "Falling back to a slower alternative." and queries again; with the server gone that
    warning was printed before the outage's one-line error. It is dropped for a lost
    connection only."""
    import logging

    import optuna

    from autodistill.results import rdb_storage

    rdb_storage("sqlite://")  # every storage opened installs the filter
    logger = logging.getLogger("optuna.storages._rdb.storage")
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger.addHandler(handler)
    verbosity = optuna.logging.get_verbosity()  # another test module may have left Optuna at ERROR (test_report does)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        lost = "(psycopg.OperationalError) consuming input failed: server closed the connection unexpectedly"
        logger.warning(f"Caught an error from sqlalchemy: {lost}. Falling back to a slower alternative.")
        logger.warning("Caught an error from sqlalchemy: (sqlite3.OperationalError) too many SQL variables. Falling back to a slower alternative.")
        logger.warning("something else about connections")
    finally:
        logger.removeHandler(handler)
        optuna.logging.set_verbosity(verbosity)
    messages = [r.getMessage() for r in seen]
    assert len(messages) == 2 and "too many SQL variables" in messages[0] and messages[1] == "something else about connections"
