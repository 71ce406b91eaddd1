"""The ``autodistill`` command's entry point: for ``search``, a local Ray starts before torch
loads (:func:`autodistill._launch.start_early`), then the CLI (:mod:`autodistill.cli`) runs."""

from __future__ import annotations

import os
import signal
import sys

from ._launch import start_early


def main() -> None:
    # SIGTERM (`kill`, `timeout`, a container's stop) ends the command as Ctrl-C does, from its
    # first line: during these imports one word and 130, not a traceback; while trials run,
    # the study's own handler stops them (runner._interrupt_handler); before or after them
    # (start-up, the report), the CLI says how to continue (cli._user_errors)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        start_early(sys.argv[1:])
        from .cli import main as cli_main  # imports torch
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        os._exit(130)  # a Ray started early ends with this process (PR_SET_PDEATHSIG)

    cli_main()
