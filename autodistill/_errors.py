"""Exceptions. Everything a user can cause derives from :class:`AutodistillError`; the CLI
prints its message on one line and exits with code 2."""

from __future__ import annotations


class AutodistillError(Exception):
    """Base class of the errors a user can cause (bad config, missing file, ...)."""


class ConfigError(AutodistillError):
    """The YAML study file is malformed; the message names the field path and value."""


class DataError(AutodistillError):
    """A dataset cannot be found or read."""


class CheckpointError(AutodistillError):
    """A checkpoint is missing, corrupt, or does not match its architecture."""


class TrialDiverged(RuntimeError):
    """A trial's loss became NaN or infinite. Recorded as a failed trial, not raised to users."""


class DiskFull(AutodistillError):
    """No space left on the device (or quota) while writing a file; the message names it.
    Nothing is half-written (every write is atomic); the CLI exits with :data:`EXIT_DISK_FULL`."""


class StorageUnavailable(AutodistillError):
    """The Optuna storage server could not be reached within ``execution.storage_retry_s``;
    the message names it. The CLI exits with :data:`EXIT_STORAGE`."""


EXIT_USER_ERROR = 2  # a mistake in the input (config, paths, checkpoints): one line, nothing written
EXIT_DISK_FULL = 3  # no space left while writing: one line naming the file and what to run after freeing space
EXIT_STORAGE = 4  # the Optuna storage stayed unreachable: one line naming it and what to run once it is back
EXIT_INTERNAL = 1  # an unexpected error (a bug): one line and the log file holding the traceback
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: `autodistill resume` continues


class StudyInterrupted(AutodistillError):
    """The driver was stopped by a signal (Ctrl-C, SIGTERM); ``autodistill resume`` continues."""


def interrupted_line(results_dir) -> str:
    """What a study stopped by a signal says, wherever the signal came (its one line)."""
    return f"interrupted; `autodistill resume {results_dir}` continues the study"
