"""The ``autodistill`` command's entry point: for ``search``, a local Ray starts before torch
loads (:func:`autodistill._launch.start_early`), then the CLI (:mod:`autodistill.cli`) runs."""

from __future__ import annotations

import sys

from ._launch import start_early


def main() -> None:
    start_early(sys.argv[1:])
    from .cli import main as cli_main  # imports torch

    cli_main()
