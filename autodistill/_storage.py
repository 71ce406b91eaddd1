"""An Optuna storage that rides out a storage server's outage: every call to the wrapped
``RDBStorage`` that fails because the server cannot be reached (a PostgreSQL restart, a
network blip) is retried with exponential backoff for at most ``execution.storage_retry_s``
seconds in all, counted from the first failure of the outage; after that the call raises
:class:`~autodistill._errors.StorageUnavailable` naming the storage, and the study stops with
one line (its running trials recorded as interrupted where the storage allows, continued by
``autodistill resume`` once it is back).

Only connection failures are retried: a constraint violation, a bad query or a full disk is
raised at once. A write whose acknowledgement was lost with the connection may be applied
twice on retry (Optuna's calls are not idempotent); a duplicated trial would be a RUNNING one,
which resume records as interrupted.

A study's own SQLite file is written in write-ahead-log mode while the study runs
(:func:`write_ahead`, :func:`end_write_ahead`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ._errors import StorageUnavailable
from ._io import caused_by_full_disk

MAX_DELAY_S = 8.0


def safe_url(url: str) -> str:
    """``url`` without its password (for messages)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def connection_error(err: BaseException | None) -> BaseException | None:
    """The lost or refused connection to the storage server that ``err`` is (or wraps), else None."""
    import sqlalchemy.exc

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if caused_by_full_disk(err):
            return None
        lost = isinstance(err, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)
        if isinstance(err, sqlalchemy.exc.DBAPIError) and (err.connection_invalidated or lost):
            return err.orig if err.orig is not None else err
        if isinstance(err, sqlalchemy.exc.DisconnectionError | ConnectionError):
            return err
        err = err.__cause__ or err.__context__
    return None


def is_connection_error(err: BaseException) -> bool:
    """Whether ``err`` (or what it wraps) is a lost or refused connection to the storage server."""
    return connection_error(err) is not None


class Outage:
    """One outage of the storage server: the first failure starts it (and says so), each
    further failure waits (backoff) until ``window_s`` has passed, then raises
    :class:`StorageUnavailable`; :meth:`over` ends it (and says so)."""

    def __init__(self, url: str, window_s: float, log: Callable[[str], None] = print):
        self.url, self.window_s, self.log = safe_url(url), window_s, log
        self.since: float | None = None
        self.delay = 0.5

    def wait(self, err: BaseException) -> None:
        now = time.monotonic()
        err = connection_error(err) or err  # the driver's words (connection refused), not Optuna's wrapper
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        if self.since is None:
            self.since, self.delay = now, 0.5
            self.log(f"the Optuna storage {self.url} is unreachable ({first}); retrying for up to {self.window_s:g} s")
        left = self.since + self.window_s - now
        if left <= 0:
            raise StorageUnavailable(f"the Optuna storage {self.url} is unreachable ({first}); retried for {self.window_s:g} s") from None
        time.sleep(min(self.delay, left))
        self.delay = min(2 * self.delay, MAX_DELAY_S)

    def over(self) -> None:
        if self.since is not None:
            self.log(f"the Optuna storage {self.url} is back after {time.monotonic() - self.since:.0f} s")
            self.since = None


class _LostConnectionNote(logging.Filter):
    """Drops Optuna's warning "Caught an error from sqlalchemy: ... Falling back to a slower
    alternative." when the error is a lost connection, not the too-many-variables error it
    expects: the fallback query fails the same way and the retry reports the outage in its own
    line; the warning printed before the one-line error of a long outage (seen in the suite)."""

    LOST = ("connection", "server closed", "terminating", "shutting down", "could not receive", "could not send")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("Caught an error from sqlalchemy"):
            return True
        return not any(words in message.lower() for words in self.LOST)


def quiet_lost_connections() -> None:
    """Install :class:`_LostConnectionNote` on Optuna's RDB storage logger (once; by
    :func:`autodistill.results.rdb_storage`, for every storage it opens)."""
    logger = logging.getLogger("optuna.storages._rdb.storage")
    if not any(isinstance(f, _LostConnectionNote) for f in logger.filters):
        logger.addFilter(_LostConnectionNote())


def retrying(inner: Any, url: str, window_s: float, log: Callable[[str], None] = print):
    """``inner`` (an ``optuna.storages.RDBStorage``) behind a storage that retries lost connections."""
    import optuna

    class RetryingStorage(optuna.storages.BaseStorage):
        def __init__(self) -> None:
            self._inner, self._outage = inner, Outage(url, window_s, log)

        def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
            while True:
                try:
                    result = getattr(self._inner, name)(*args, **kwargs)
                except Exception as err:
                    if not is_connection_error(err):
                        raise
                    self._outage.wait(err)
                    continue
                self._outage.over()
                return result

    for name in dir(optuna.storages.BaseStorage):
        if not name.startswith("_") and callable(getattr(optuna.storages.BaseStorage, name)):
            setattr(RetryingStorage, name, lambda self, *a, _name=name, **k: self._call(_name, *a, **k))
    RetryingStorage.__abstractmethods__ = frozenset()
    return RetryingStorage()


_WRITE_AHEAD: list[Any] = []
"""the engines :func:`write_ahead` switched, until :func:`end_write_ahead`"""


def write_ahead(storage: Any) -> None:
    """Put the SQLite file of ``storage`` (an ``optuna.storages.RDBStorage``) in write-ahead-log
    mode with ``synchronous=NORMAL`` while a study writes it: a commit appends to
    ``study.db-wal`` without waiting for the disk (an fsync per commit before, and a trial
    makes dozens: its sampled parameters, curve, metrics), and optuna-dashboard's reads
    neither block the driver's writes nor wait for them. A killed process loses no commit (the
    log is read back on the next open); a power cut may lose the last ones, never the file,
    and ``resume`` treats a trial whose end was lost as interrupted. Nothing happens for
    another database, an in-memory one, or a file that cannot switch (locked past the busy
    timeout): its commits stay as they were. :func:`end_write_ahead` turns it back."""
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    engine = storage.engine
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return
    try:
        with engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode=WAL").scalar()
    except OperationalError:
        return
    if str(mode).lower() != "wal":
        return
    event.listen(engine, "connect", _normal_sync)
    engine.dispose()  # the connection that made the schema syncs fully: a new one, as every later one, does not
    _WRITE_AHEAD.append(engine)


def _normal_sync(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def end_write_ahead() -> None:
    """Copy the log of every file :func:`write_ahead` switched into the file and turn it back
    into a plain (rollback-journal) database, one file again, which a reader on a read-only
    copy can open; then close the connections (the CLI ends without the interpreter's
    teardown, which would leave ``study.db-wal`` behind). A reader that still has the file open
    (optuna-dashboard) keeps it in write-ahead mode: SQLite folds the log in and removes it when
    the reader closes. Never raises: the study's results are already written."""
    from sqlalchemy import event

    while _WRITE_AHEAD:
        engine = _WRITE_AHEAD.pop()
        with contextlib.suppress(Exception), engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA busy_timeout=200")  # a reader in the way: give up at once, not after 60 s
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.exec_driver_sql("PRAGMA journal_mode=DELETE")
        with contextlib.suppress(Exception):
            event.remove(engine, "connect", _normal_sync)
        with contextlib.suppress(Exception):
            engine.dispose()
