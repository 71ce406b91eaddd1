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


class StudyInterrupted(AutodistillError):
    """The driver was stopped by a signal (Ctrl-C, SIGTERM); ``autodistill resume`` continues."""
