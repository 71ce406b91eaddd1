"""Results are written atomically: a writer that fails midway leaves the old file intact and
no temporary file behind."""

import errno
import json

import pytest
import torch

from autodistill import _io
from autodistill._errors import DiskFull


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "trials.csv"
    _io.write_text(target, "number,state\n0,COMPLETE\n")

    def half_then_crash(fh):
        fh.write(b"number,state\n0,COMP")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _io.atomic_write(target, half_then_crash)
    assert target.read_text() == "number,state\n0,COMPLETE\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trials.csv"]


def test_helpers_round_trip(tmp_path):
    _io.write_json(tmp_path / "a.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [1, 2]}
    _io.torch_save(tmp_path / "s.pt", {"w": torch.ones(2)})
    assert torch.equal(torch.load(tmp_path / "s.pt", weights_only=True)["w"], torch.ones(2))
    assert (tmp_path / "s.pt").stat().st_mode & 0o777 == 0o666 & ~_io._umask()


def test_atomic_dir_replaces_only_on_success(tmp_path):
    dest = tmp_path / "trial_0001"
    with _io.atomic_dir(dest) as staging:
        (staging / "a.txt").write_text("one")
    assert (dest / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError), _io.atomic_dir(dest) as staging:
        (staging / "a.txt").write_text("two")
        raise RuntimeError("export check failed")
    assert (dest / "a.txt").read_text() == "one"  # the old folder stays, no staging left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trial_0001"]
    with _io.atomic_dir(dest) as staging:
        (staging / "b.txt").write_text("three")
    assert sorted(p.name for p in dest.iterdir()) == ["b.txt"]


def test_a_failed_atomic_dir_removes_the_parent_folders_it_made(tmp_path):
    """A failed export leaves no empty ``export/`` in the study folder; folders that existed,
    or that something else wrote into meanwhile, stay."""
    study = tmp_path / "study"
    study.mkdir()
    with pytest.raises(RuntimeError), _io.atomic_dir(study / "export" / "trial_0002") as staging:
        (staging / "student.onnx").write_text("x")
        raise RuntimeError("onnx: mean |logit diff| is 1.35 quantization steps")
    assert list(study.iterdir()) == []
    with pytest.raises(RuntimeError), _io.atomic_dir(study / "export" / "trial_0002"):
        (study / "export" / "notes.txt").write_text("mine")
        raise RuntimeError("failed")
    assert sorted(p.name for p in (study / "export").iterdir()) == ["notes.txt"]
    with _io.atomic_dir(study / "a" / "b") as staging:
        (staging / "ok").write_text("1")
    assert (study / "a" / "b" / "ok").read_text() == "1"


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_file_keeps_the_old_one_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    _io.write_text(target, "old")
    monkeypatch.setattr(_io.os, "fsync", _no_space)  # where a full disk shows up for buffered writes
    with pytest.raises(DiskFull, match=f"no space left on device while writing {target}$"):
        _io.write_text(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_other_os_errors_stay_what_they_are(tmp_path, monkeypatch):
    monkeypatch.setattr(_io.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError, match="I/O error") as info:
        _io.write_text(tmp_path / "a.txt", "x")
    assert not isinstance(info.value, DiskFull)


def test_a_full_disk_inside_an_atomic_folder_names_the_folder_and_leaves_nothing(tmp_path):
    dest = tmp_path / "export" / "trial_0003"
    with pytest.raises(DiskFull, match=f"while writing {dest}$"), _io.atomic_dir(dest) as staging:
        (staging / "student.pt").write_bytes(b"x")
        _no_space()
    assert list(tmp_path.iterdir()) == []  # not even the export/ folder it made


@pytest.mark.parametrize("pattern", ["0002.pt", "trial_*"])
def test_injected_enospc_hits_only_the_named_writes(tmp_path, monkeypatch, pattern):
    monkeypatch.setenv("AUTODISTILL_INJECT_ENOSPC", pattern)
    _io.torch_save(tmp_path / "0001.pt", {"epoch": 1})  # another name: written
    with pytest.raises(DiskFull), _io.atomic_dir(tmp_path / "trial_0002") as staging:
        _io.torch_save(staging / "0002.pt", {"epoch": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0001.pt"]


def test_durable_writes_fsync_and_epoch_checkpoints_do_not(tmp_path, monkeypatch):
    """Results are fsynced; a trial's per-epoch checkpoint only has to survive the process, and
    one emptied by a power cut is read as unreadable (the trial then restarts its epochs)."""
    import os

    from autodistill._errors import CheckpointError
    from autodistill.checkpoints import load_train_state
    from autodistill.tune.trainable import _resume_state

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    _io.write_json(tmp_path / "study.json", {"x": 1})
    assert len(synced) == 1
    state = {"epoch": 3, "w": torch.ones(2)}
    _io.torch_save(tmp_path / "0001.pt", state, durable=False)
    _io.write_json(tmp_path / "spec.json", {"x": 1}, durable=False)
    assert len(synced) == 1  # no fsync for either
    assert load_train_state(tmp_path / "0001.pt")["epoch"] == 3
    (tmp_path / "0001.pt").write_bytes(b"")  # what a power cut can leave of an unsynced file
    with pytest.raises(CheckpointError, match="cannot read the epoch checkpoint"):
        load_train_state(tmp_path / "0001.pt")
    assert _resume_state({"inflight": str(tmp_path / "0001.pt")}) is None  # the trial restarts from epoch 1


def test_final_checkpoint_folders_of_dead_workers_are_swept(tmp_path):
    """A worker killed between writing its final checkpoint folder and Ray's copy of it leaves
    the folder in the temporary directory; the next trial on the machine, or the end of the
    study, removes it once its process is gone and it is a minute old. A live process's folder,
    a new one and other files stay."""
    import os
    import subprocess
    import sys
    import time

    from autodistill.tune.trainable import CKPT_PREFIX, STALE_CKPT_S, sweep_stale_checkpoints

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: kill(pid, 0) finds no such process
    old = time.time() - STALE_CKPT_S - 5

    def folder(name: str, age: float | None = old):
        path = tmp_path / name
        path.mkdir()
        (path / "student.pt").write_bytes(b"x" * 10)
        if age is not None:
            os.utime(path, (age, age))
        return path

    stale = folder(f"{CKPT_PREFIX}{gone.pid}-abc123")
    live = folder(f"{CKPT_PREFIX}{os.getpid()}-def456")
    young = folder(f"{CKPT_PREFIX}{gone.pid}-ghi789", age=None)
    other = folder("unrelated-999999-x")
    assert sweep_stale_checkpoints(tmp_path) == 1
    assert not stale.exists()
    assert live.exists() and young.exists() and other.exists()
    os.utime(young, (old, old))
    assert sweep_stale_checkpoints(tmp_path) == 1 and not young.exists()
    assert sweep_stale_checkpoints(tmp_path / "missing") == 0


def test_a_trial_saves_its_state_once_the_checkpoint_interval_has_passed(tmp_path, monkeypatch):
    """search.checkpoint_interval_s: a trial of short epochs saves no state after every epoch
    (each save costs a few percent of a 0.1-s epoch); it saves after the first epoch that ends
    once the interval has passed since its start or its last save; 0 saves after every one."""
    from autodistill.tune import trainable

    now = [100.0]
    monkeypatch.setattr(trainable.time, "perf_counter", lambda: now[0])
    path = tmp_path / "0001.pt"
    save = trainable._checkpointer(path, 10.0)
    saved = []
    for epoch, at in enumerate([103.0, 106.0, 109.9, 110.0, 115.0, 120.5], start=1):  # epochs ending at these times
        now[0] = at
        save({"epoch": epoch, "w": torch.full((2,), float(epoch))})
        if path.exists():
            saved.append(torch.load(path, weights_only=True)["epoch"])
    assert sorted(set(saved)) == [4, 6]  # 10 s after the start, then 10.5 s after that save
    every = trainable._checkpointer(tmp_path / "0002.pt", 0.0)
    for epoch in (1, 2):
        every({"epoch": epoch})
        assert torch.load(tmp_path / "0002.pt", weights_only=True)["epoch"] == epoch
