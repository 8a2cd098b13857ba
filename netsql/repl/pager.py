"""Results taller than the terminal go to a pager (``$PAGER``, default ``less -SRFX``)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from typing import TextIO

from netsql.context import notice

#: less's options when $LESS does not say (as git does): keep the result on screen when
#: quit (X), quit at once when it fits (F), colours raw (R), long lines cut (S).
LESS_OPTIONS = "SRFX"


def pager_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The pager's environment: ``LESS`` set when unset, so ``PAGER=less`` keeps the
    result on screen too."""
    env = dict(environ)
    env.setdefault("LESS", LESS_OPTIONS)
    return env


def needs_pager(text: str, rows: int) -> bool:
    """More lines than fit above the prompt and toolbar."""
    return text.count("\n") > max(rows - 2, 1)


def page(text: str, command: str, err: TextIO) -> bool:
    """Show ``text`` through ``command`` (run by ``sh -c``, like git does with $PAGER).

    Ctrl-C belongs to the pager while it runs. False when the pager could not run (the
    caller then prints the text itself).
    """
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        try:
            proc = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE,
                                    env=pager_env(os.environ))
        except OSError as exc:
            notice(err, f"pager {command!r} did not start: {exc}", "warning")
            return False
        assert proc.stdin is not None
        try:
            proc.stdin.write(text.encode("utf-8", errors="replace"))
            proc.stdin.close()
        except BrokenPipeError:  # the user quit the pager before reading everything
            pass
        status = proc.wait()
        if status == 127:  # sh: command not found
            notice(err, f"pager {command!r} not found (.pager off to stop paging)",
                   "warning")
            return False
        return True
    finally:
        signal.signal(signal.SIGINT, old)
