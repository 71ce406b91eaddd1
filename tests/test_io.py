"""Results are written atomically: a writer that fails midway leaves the old file intact and
no temporary file behind."""

import json

import pytest
import torch

from autodistill import _io


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
