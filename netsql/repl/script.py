"""Dot-commands outside the interactive shell: ``echo '.tables' | netsql``,
``netsql -f script.sql`` with ``.mode csv`` in it, as sqlite3 and duckdb accept them.

Input with a dot-command line runs through the shell's own input path
(:class:`~netsql.repl.shell.Shell`, no prompt_toolkit), starting from the command
line's format and header settings; without a terminal nothing is paged or cut.
"""

from __future__ import annotations

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
