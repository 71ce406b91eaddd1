"""The ``autodistill`` command: a thin layer over the Python API.

Every failure ends in one line on stderr and a documented exit code (:mod:`._errors`): a user
mistake (bad config, missing file) ``error: <one line>`` and 2, nothing written under
``results/``; a full disk the file it could not write and what to run once space is free, 3;
an unexpected error (a bug) one line and the log file holding its traceback
(``<results>/<name>/error.log``, or one in the temp folder when no study folder is known), 1.
``--debug`` or ``AUTODISTILL_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from . import layout
from ._errors import (
    EXIT_DISK_FULL,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_STORAGE,
    EXIT_USER_ERROR,
    AutodistillError,
    DiskFull,
    StorageUnavailable,
    StudyInterrupted,
    interrupted_line,
)
from ._launch import SEARCH_FLAGS
from .export import export_student
from .loading import load_config, load_study_config
from .report import front_table
from .results import load_front, load_summary
from .space import describe, search_space

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Automated knowledge distillation: search students, get the Pareto front.",
)
console = Console()
if not console.is_terminal:  # logs and CI: wide enough that the front table is not truncated
    console = Console(width=160)
err_console = Console(stderr=True)


_study_dir: list[Path] = []  # the results folder of the running command, once known (for error.log)
_RESUMABLE = ("search", "resume")  # the commands whose study `autodistill resume` continues


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="show the traceback of an unexpected error (also AUTODISTILL_DEBUG=1)")) -> None:
    if debug:
        os.environ["AUTODISTILL_DEBUG"] = "1"


def _user_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _study_dir.clear()
        try:
            return fn(*args, **kwargs)
        except StudyInterrupted as err:
            _fail(str(err), EXIT_INTERRUPTED)
        except DiskFull as err:
            _fail(f"error: {err}", EXIT_DISK_FULL)
        except StorageUnavailable as err:
            _fail(f"error: {err}", EXIT_STORAGE)
        except AutodistillError as err:
            _fail(f"error: {err}", EXIT_USER_ERROR)
        except KeyboardInterrupt:  # outside the trials' run (typer would end it silently, 130)
            study = next((d for d in _study_dir if layout.config_file(d).is_file()), None) if fn.__name__ in _RESUMABLE else None
            _fail(interrupted_line(study) if study else "interrupted", EXIT_INTERRUPTED)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as err:
            if os.environ.get("AUTODISTILL_DEBUG"):
                raise
            log = _write_error_log()
            first = (str(err).strip().splitlines() or [""])[0][:300]
            _fail(f"error: unexpected {type(err).__name__}: {first} (the traceback is in {log}; --debug shows it here)", EXIT_INTERNAL)

    return wrapper


def _fail(line: str, code: int) -> None:
    err_console.print(line, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _write_error_log() -> Path:
    """The current exception's traceback, appended to the study's error.log (or a log in the
    temp folder when the command has no study folder, or it cannot be written)."""
    text = f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} autodistill {' '.join(sys.argv[1:])}\n{traceback.format_exc()}\n"
    folders = [d for d in _study_dir if d.is_dir()] + [Path(tempfile.gettempdir())]
    for folder in folders:
        path = folder / (layout.ERROR_LOG if folder in _study_dir else f"autodistill-error-{os.getpid()}.log")
        try:
            with open(path, "a") as fh:
                fh.write(text)
            return path
        except OSError:
            continue
    return Path("(no log could be written)")


def _overrides(**flags: Any) -> dict[str, Any]:
    """The study file's keys that ``search``'s flags set (:data:`autodistill._launch.SEARCH_FLAGS`)."""
    keys = {flag[2:].replace("-", "_"): key for flag, key in SEARCH_FLAGS.items()}
    return {keys[k]: v for k, v in flags.items() if v is not None}


@app.command()
@_user_errors
def search(
    config_file: Path = typer.Argument(..., help="study YAML, e.g. search_spaces/digits.yaml"),
    trials: int | None = typer.Option(None, "--trials", help="number of trials (search.trials)"),
    time_budget: float | None = typer.Option(None, "--time-budget", help="seconds (search.time_budget_s)"),
    epoch_budget: int | None = typer.Option(None, "--epoch-budget", help="student-epochs over all trials (search.epoch_budget)"),
    max_concurrent: int | None = typer.Option(None, "--max-concurrent", help="trials at once (search.max_concurrent)"),
    results: str | None = typer.Option(None, "--results", help="base directory of results (execution.results)"),
    name: str | None = typer.Option(None, "--name", help="study name and folder (name)"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (execution.address)"),
) -> None:
    """Run a study: sample students and recipes, distill, measure, and report the Pareto front."""
    from .tune.runner import run_study  # imports Ray

    config = load_config(
        config_file,
        _overrides(
            trials=trials, time_budget=time_budget, epoch_budget=epoch_budget, max_concurrent=max_concurrent, results=results, name=name, address=address
        ),
    )
    _study_dir.append(config.results_dir)
    _print_result(config, run_study(config, log=_log, release_ray=True))


def _log(message: str) -> None:
    console.print(message, markup=False, highlight=False)


def _print_result(config, result) -> None:
    summary = result.summary
    console.print(front_table(result.front, config.objectives, summary["teacher"], title=f"Pareto front of {config.name}"))
    counts = ", ".join(f"{k.lower()} {v}" for k, v in summary["trials"].items() if v)
    console.print(
        f"{counts}; normalised hypervolume {summary['hypervolume']:.4f}; wall time {result.wall_s:.0f} s; results in {result.results_dir}",
        markup=False,
        highlight=False,
    )


@app.command()
@_user_errors
def resume(
    results_dir: Path = typer.Argument(..., help="the study's results directory, e.g. results/digits"),
    trials: int | None = typer.Option(None, "--trials", min=1, help="add N trials to the study's request"),
    time_budget: float | None = typer.Option(None, "--time-budget", help="seconds for this run (search.time_budget_s)"),
    epoch_budget: int | None = typer.Option(None, "--epoch-budget", help="student-epochs of the whole study, earlier runs included (search.epoch_budget)"),
    max_concurrent: int | None = typer.Option(None, "--max-concurrent", help="trials at once (search.max_concurrent)"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (execution.address)"),
) -> None:
    """Finish an interrupted study (completed trials stay, interrupted ones continue from their
    last epoch), or add trials to a finished one with --trials N."""
    from .tune.runner import run_study  # imports Ray

    _study_dir.append(results_dir)
    overrides = _overrides(time_budget=time_budget, epoch_budget=epoch_budget, max_concurrent=max_concurrent, address=address)
    config = load_study_config(results_dir, overrides)
    if trials is not None:
        overrides["search.trials"] = config.search.trials + trials
        _log(f"request: {config.search.trials} + {trials} = {overrides['search.trials']} trials")
        config = load_study_config(results_dir, overrides)
    _print_result(config, run_study(config, log=_log, resume=True, release_ray=True))


@app.command()
@_user_errors
def export(
    results_dir: Path = typer.Argument(..., help="the study's results directory, e.g. results/digits"),
    pick: str = typer.Option("knee", "--pick", help="knee | quality | accuracy | perplexity | params | latency | <trial number>"),
    max_latency_ms: float | None = typer.Option(
        None, "--max-latency-ms", help="only trials at most this slow (latency_ms; language models: decode_ms_per_token)"
    ),
    min_accuracy: float | None = typer.Option(
        None, "--min-accuracy", help="only trials at least this accurate (validation; language models: next-token accuracy)"
    ),
    max_perplexity: float | None = typer.Option(None, "--max-perplexity", help="language models: only trials with at most this validation perplexity"),
    formats: str | None = typer.Option(
        None,
        "--format",
        help="comma-separated; image classifiers: pt, torchscript, onnx, executorch; language models: hf, onnx (default: all of the task's that fit the student)",
    ),
    out: Path | None = typer.Option(None, "--out", help="folder for the files (default: <results_dir>/export/trial_<n>)"),
) -> None:
    """Export a student (images: PyTorch, TorchScript, ONNX; language models: a Hugging Face
    directory and an ONNX decoder), verify each file against PyTorch on the validation split,
    and write its model card model.json."""
    if not results_dir.is_dir():
        raise AutodistillError(f"{results_dir}: no such results directory")
    _study_dir.append(results_dir)
    chosen = None if formats is None else tuple(f.strip() for f in formats.split(",") if f.strip())
    result = export_student(results_dir, pick, chosen, out, max_latency_ms, min_accuracy, log=_log, max_perplexity=max_perplexity)
    _log(f"exported trial {result.trial} to {result.out_dir}: {', '.join(p.name for p in result.files.values())}, model.json")


@app.command()
@_user_errors
def validate(config_file: Path = typer.Argument(..., help="study YAML")) -> None:
    """Check a study file and print its resolved search space."""
    config = load_config(config_file)
    rows = describe(search_space(config))
    table = Table(title=f"search space of {config.name}: {len(rows)} dimension(s)", title_justify="left")
    for col in ("dimension", "distribution", "when"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["dimension"], row["distribution"], row["when"])
    console.print(table)
    objectives = ", ".join(f"{k} ({v})" for k, v in config.objectives.items())
    console.print(
        f"objectives: {objectives}; {config.search.trials} trials with {config.search.sampler}; results in {config.results_dir}", markup=False, highlight=False
    )


@app.command()
@_user_errors
def show(results_dir: Path = typer.Argument(..., help="a study's results directory, e.g. results/digits")) -> None:
    """Print a study's Pareto front."""
    _study_dir.append(results_dir)
    summary = load_summary(results_dir)
    front = load_front(results_dir)
    objectives = summary["objectives"]
    console.print(front_table(front, objectives, summary.get("teacher"), title=f"Pareto front of {summary['name']}"))
    counts = ", ".join(f"{k.lower()} {v}" for k, v in summary["trials"].items() if v)
    console.print(f"{counts}; normalised hypervolume {summary['hypervolume']:.4f}", markup=False, highlight=False)


def main() -> None:
    if hasattr(faulthandler, "register") and hasattr(signal, "SIGUSR2"):
        # `kill -USR2 <pid>` prints every thread's stack to stderr and the command goes on:
        # where a study that seems stuck is waiting (Ray Tune takes SIGUSR1 for itself)
        faulthandler.register(signal.SIGUSR2, all_threads=True, chain=False)
    code: int | str | None = 0
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        code = 130
    except SystemExit as done:  # typer ends every command this way
        code = done.code
    # the command is over: a SIGTERM (an interrupt since autodistill._command's first line) now only ends the exit sooner
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if "ray" in sys.modules:
        _end_now(code)
    sys.exit(code)


def _end_now(code: int | str | None) -> None:
    """End a process that ran Ray without the interpreter's teardown of torch, Ray and their
    threads (seconds): Ray is shut down first (:func:`wait_ray_released`), every result is
    already written (atomically), and the output is flushed."""
    import logging

    from .tune.runner import wait_ray_released

    try:
        wait_ray_released(interrupted=code == EXIT_INTERRUPTED)
    except Exception:  # stopping Ray's processes failed: let the interpreter's own exit try again
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if isinstance(code, str):  # sys.exit("message") prints it and exits with 1
        print(code, file=sys.stderr, flush=True)
        code = 1
    os._exit(code or 0)


if __name__ == "__main__":
    main()
