import pytest
from helpers import run_cli, run_cli_here, small_study

from autodistill._errors import EXIT_DISK_FULL, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USER_ERROR


def test_validate_prints_the_search_space(tmp_path):
    result = run_cli("validate", small_study(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "student.family" in result.stdout
    assert "float [0.003, 0.01] log" in result.stdout
    assert "student.family = mobilenet" in result.stdout


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"train.lr": {"low": 1, "high": 0.1}}, "train.lr: low (1) is greater than high (0.1)"),
        ({"student.cnn.kernel": 5}, "student.cnn.kernel: unknown key"),
        ({"search.sampler": "grid"}, "search.sampler"),
        ({"teacher.checkpoint": "/nope/teacher.pt"}, "teacher.checkpoint: file not found: /nope/teacher.pt"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "search"])
def test_bad_config_exits_2_with_one_line_and_writes_nothing(tmp_path, override, expected, command):
    path = small_study(tmp_path, cached_teacher=False, **override)
    result = run_cli_here(command, path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


def test_missing_file_and_directory(tmp_path):
    result = run_cli_here("search", tmp_path / "nope.yaml")
    assert result.returncode == 2 and "nope.yaml: file not found" in result.stderr
    result = run_cli_here("validate", tmp_path)
    assert result.returncode == 2 and "is a directory" in result.stderr


def test_show_on_missing_results_is_a_clear_error(tmp_path):
    result = run_cli_here("show", tmp_path / "results" / "none")
    assert result.returncode == 2
    assert "no such results directory" in result.stderr


def test_teacher_checkpoint_of_another_architecture_leaves_no_results(tmp_path):
    import torch

    from autodistill.students import build_student

    other = build_student({"family": "cnn", "dims": {"widths": [4], "depths": [1]}, "in_channels": 1, "num_classes": 10, "image_size": 8})
    torch.save(other.state_dict(), tmp_path / "wrong.pt")
    result = run_cli("search", small_study(tmp_path, **{"teacher.checkpoint": str(tmp_path / "wrong.pt")}))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "wrong.pt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results" / "tiny").exists()


def test_an_unexpected_error_is_one_line_and_its_traceback_goes_to_error_log(tmp_path):
    study = tmp_path / "broken"
    study.mkdir()
    (study / "study.json").write_text("{not json")  # a bug-like failure deep inside `show`
    (study / "pareto.csv").write_text("number\n")
    run = run_cli("show", study)
    assert run.returncode == EXIT_INTERNAL
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("error: unexpected JSONDecodeError: ") and f"the traceback is in {study / 'error.log'}" in line
    log = (study / "error.log").read_text()
    assert "Traceback (most recent call last)" in log and "json.decoder.JSONDecodeError" in log and "autodistill show" in log

    debug = run_cli("--debug", "show", study)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def test_exit_codes_are_distinct():
    assert len({EXIT_USER_ERROR, EXIT_DISK_FULL, EXIT_INTERNAL, EXIT_INTERRUPTED}) == 4 and EXIT_INTERNAL != 0
