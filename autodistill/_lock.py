"""One writer per results directory: ``search``, ``resume`` and ``export`` hold an exclusive
``flock`` on ``<results>/.lock`` for as long as they run.

The kernel releases a ``flock`` when its holder dies, however it dies (SIGKILL, power loss of
the process), so a lock file whose lock is free is stale by definition: it is taken over and
the previous holder is named in the log. The file's content (pid, host, command, start time)
only serves the error message of a refused second writer.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ._errors import AutodistillError
from .layout import LOCK as LOCK_NAME


class StudyLocked(AutodistillError):
    """Another live process holds the results directory."""


class StudyLock:
    def __init__(self, results_dir: Path, log: Callable[[str], None] = print):
        self.path = Path(results_dir) / LOCK_NAME
        self._log = log
        self._fd: int | None = None

    def acquire(self) -> StudyLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read(fd))
            os.close(fd)
            raise StudyLocked(f"{self.path.parent} is in use by {holder}; wait for it to end or stop it first") from None
        previous = _read(fd)
        if previous.get("pid"):
            self._log(f"took over a stale lock of {self.path.parent} left by {_describe(previous)}, which is no longer running")
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # a clean exit leaves no holder to report
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> StudyLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}


def _describe(record: dict) -> str:
    if not record.get("pid"):
        return "another process"
    text = f"pid {record['pid']}"
    if record.get("host"):
        text += f" on {record['host']}"
    if record.get("command"):
        text += f" ({record['command']}"
        text += f", since {record['started']})" if record.get("started") else ")"
    return text
