"""The files of a study, in one place: ``results/<name>/`` as the README's results table lists
it, and the caches under ``results/.teachers/`` shared by the studies of one base folder.

Every module that reads or writes a study's files asks here for the path, so renaming a file
is one change, and this module reads like the table it mirrors."""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.yaml"  # the resolved config (every default filled in); resume reads it
STUDY_DB = "study.db"  # Optuna storage (sqlite default)
RAY = "ray"  # the Ray Tune experiment (progress.csv, result.json, TensorBoard events)
TRIALS_DIR = "trials"  # trials/<number>/: one folder per finished trial
TRIALS_CSV = "trials.csv"  # one row per trial
TRIALS_PARQUET = "trials.parquet"
PARETO_CSV = "pareto.csv"  # the non-dominated trials, latency re-measured alone
PARETO_PNG = "pareto.png"
REPORT_HTML = "report.html"
STUDY_JSON = "study.json"  # summary
EXPORT_DIR = "export"  # export/trial_<n>/: what `autodistill export` wrote
INFLIGHT_DIR = "inflight"  # while a study runs: each running trial's last epoch checkpoint
LOCK = ".lock"  # held by the one process writing the directory
ERROR_LOG = "error.log"  # the traceback of an unexpected error (the console shows one line)
TEACHERS = ".teachers"  # <execution.results>/.teachers/: trained teachers and their outputs, by hash

# inside trials/<number>/
STUDENT = "student.pt"  # state dict only
SPEC = "spec.json"  # everything needed to rebuild the student
METRICS = "metrics.json"  # final metrics and per-epoch history


def config_file(results_dir: Path) -> Path:
    return Path(results_dir) / CONFIG


def study_db(results_dir: Path) -> Path:
    return Path(results_dir) / STUDY_DB


def trial_dir(results_dir: Path, number: int) -> Path:
    """``trials/<number>/`` (zero-padded to 4 digits, so a listing sorts by number)."""
    return Path(results_dir) / TRIALS_DIR / f"{number:04d}"


def inflight_dir(results_dir: Path) -> Path:
    return Path(results_dir) / INFLIGHT_DIR


def inflight_path(inflight: Path, number: int) -> Path:
    """The last epoch checkpoint of running trial ``number`` under ``inflight/``."""
    return Path(inflight) / f"{number:04d}.pt"


def export_dir(results_dir: Path, number: int) -> Path:
    return Path(results_dir) / EXPORT_DIR / f"trial_{number:04d}"


def teacher_cache(base: str | Path, key: str) -> Path:
    """A trained teacher's folder: ``<execution.results>/.teachers/<key>/``."""
    return Path(base) / TEACHERS / key


def outputs_cache(base: str | Path, key: str) -> Path:
    """A teacher's cached outputs: ``<execution.results>/.teachers/outputs/<key>/``."""
    return Path(base) / TEACHERS / "outputs" / key


def costs_cache(base: str | Path, key: str) -> Path:
    """A teacher's static costs (params, MACs, size): ``<execution.results>/.teachers/costs/<key>.json``."""
    return Path(base) / TEACHERS / "costs" / f"{key}.json"


def ray_trial_dirname(number: int, ray_trial_id: str) -> str:
    """The name of a trial's folder under ``ray/`` (one TensorBoard run per trial)."""
    return f"trial_{number:04d}_{ray_trial_id}"
