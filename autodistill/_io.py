"""Atomic writes: a temp file in the same directory, fsync, then ``os.replace``. A reader
never sees a half-written result, whatever happens to the writer.

``durable=False`` leaves out the fsync, for files that are only there to survive the *process*
(a trial's per-epoch checkpoint, files Ray copies elsewhere): the rename is still atomic for
every reader while the machine runs; after a power cut such a file may be empty, and its reader
must then do without it (a trial restarts its epochs). An fsync per epoch waits for the disk,
which on a busy shared disk took 25 ms and more.

A write that runs out of space (ENOSPC, or EDQUOT for a quota) leaves nothing behind and raises
:class:`~autodistill._errors.DiskFull` naming the file. Tests make a chosen write fail that
way with ``AUTODISTILL_INJECT_ENOSPC=<pattern>,...`` (``fnmatch`` patterns of file or folder
names, e.g. ``report.html`` or ``0002.pt``)."""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ._errors import DiskFull

_FULL = (errno.ENOSPC, errno.EDQUOT)


def _full_disk(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in _FULL


def caused_by_full_disk(err: BaseException) -> bool:
    """Whether ``err`` or an exception it was raised from is a full disk: ENOSPC / EDQUOT, or
    SQLite's "database or disk is full" under an Optuna storage error."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if _full_disk(err) or "database or disk is full" in str(err) or "No space left on device" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def _injected_enospc(path: Path) -> None:
    patterns = [p for p in os.environ.get("AUTODISTILL_INJECT_ENOSPC", "").split(",") if p]
    if any(fnmatch.fnmatch(path.name, p) for p in patterns):
        raise OSError(errno.ENOSPC, "No space left on device (injected: AUTODISTILL_INJECT_ENOSPC)", str(path))


@contextlib.contextmanager
def disk_full_named(path: Path) -> Iterator[None]:
    """Turn running out of space while writing ``path`` into :class:`DiskFull` naming it."""
    try:
        yield
    except OSError as err:
        if not _full_disk(err):
            raise
        raise DiskFull(f"no space left on device while writing {path}") from None


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb", *, durable: bool = True) -> Path:
    path = Path(path)
    with disk_full_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
            with os.fdopen(fd, mode) as fh:
                _injected_enospc(path)
                write(fh)
                fh.flush()
                if durable:
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> Path:
    return atomic_write(path, lambda fh: fh.write(text), "w", durable=durable)


def write_json(path: str | os.PathLike, obj: Any, *, durable: bool = True) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", durable=durable)


def torch_save(path: str | os.PathLike, obj: Any, *, durable: bool = True) -> Path:
    return atomic_write(path, lambda fh: torch.save(obj, fh), durable=durable)


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """A folder filled under a temporary name beside ``dest`` and moved into place only when
    the block succeeds (replacing an older ``dest``); on error nothing is left behind, not
    even the parent folders it made (e.g. a study's ``export/`` after a failed check)."""
    dest = Path(dest)
    made = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]  # deepest first
    done = False
    try:
        with disk_full_named(dest):
            dest.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
            try:
                staging.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; results are meant to be shared
                yield staging
                _injected_enospc(dest)
                if dest.exists():
                    shutil.rmtree(dest)
                staging.rename(dest)
                done = True
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
                for folder in made if not done else []:
                    with contextlib.suppress(OSError):  # not empty: something else wrote there meanwhile
                        folder.rmdir()
    except DiskFull:  # a file inside the staging folder: name the folder the user will look for
        raise DiskFull(f"no space left on device while writing {dest}") from None
