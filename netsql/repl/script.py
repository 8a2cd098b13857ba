"""Dot-commands outside the interactive shell: ``echo '.tables' | netsql``,
``netsql -f script.sql`` with ``.mode csv`` in it, as sqlite3 and duckdb accept them.

Input with a dot-command line runs through the shell's own input path
(:class:`~netsql.repl.shell.Shell`, no prompt_toolkit), starting from the command
line's format and header settings; without a terminal nothing is paged or cut.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from netsql.repl.config import Config
from netsql.repl.face import Outcome
from netsql.repl.shell import Shell
from netsql.repl.sqltext import split_input

if TYPE_CHECKING:
    from netsql.context import Env
    from netsql.engine import Engine


def has_commands(text: str) -> bool:
    """Does ``text`` hold a dot-command line (where the shell would take one)?"""
    return any(kind == "command" for kind, _ in split_input(text))


def unsafe_command(text: str) -> str | None:
    """The first dot-command line of ``text`` that --safe refuses (docs/security.md):
    one that reads or writes a file or runs a command as root (.read, .once, .output
    FILE, .pager COMMAND, .run PATH); None when there is none."""
    for kind, line in split_input(text):
        if kind != "command":
            continue
        try:
            argv = shlex.split(line)
        except ValueError:  # the shell reports it and runs nothing of it
            continue
        name, args = argv[0].lstrip(".").lower(), argv[1:]
        if (name in ("read", "once")
                or (name == "output" and args not in ([], ["stdout"]))
                or (name == "pager" and [a.lower() for a in args] not in ([], ["off"]))
                or (name == "run" and args and ("/" in args[0] or args[0].endswith(".sql")))):
            return line
    return None


def run_script(env: Env, engine: Engine,
               runs: Sequence[tuple[str, str, dict[str, Any] | None]], fmt: str, *,
               header: bool = True) -> int:
    """Run SQL and dot-commands in order, as the shell would; 0, or 1 at the first
    error (the rest does not run, as with statements). ``.quit`` ends the input."""
    shell = Shell(engine, env, Config())
    shell.mode, shell.header = fmt, header
    shell.maxrows, shell.pager, shell.timer = 0, None, False
    try:
        for origin, text, params in runs:
            where = origin if origin not in ("sql", "stdin") else None
            outcome = shell.run_input(text, where, params)
            if outcome is Outcome.ERROR:
                return 1
            if outcome is Outcome.QUIT:
                break
        return 0
    finally:
        shell.set_output(None)
