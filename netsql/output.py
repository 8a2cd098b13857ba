"""Printing results for the CLI (and the shell): one place decides tty, width, escaping."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from netsql.context import HUMAN_FORMATS
from netsql.formats import get_formatter
from netsql.formats.base import OutputContext, ResultSet

if TYPE_CHECKING:
    from netsql.context import Env, ExitStatus
    from netsql.engine import Result


class Printer:
    def __init__(self, env: Env, fmt: str, *, header: bool = True) -> None:
        self.env = env
        self.formatter = get_formatter(fmt)
        self.ctx = OutputContext(tty=bool(env.stdout_isatty), width=env.width or 100,
                                 header=header, notice=env.notice)
        self.printed = 0

    def print(self, result: Result) -> None:
        if result.data is None:
            return
        if self.printed and self.formatter.name in HUMAN_FORMATS:
            self.env.stdout.write("\n")
        self.formatter.write(result.data, self.env.stdout, self.ctx)
        self.env.stdout.flush()
        self.printed += 1


def list_tables(env: Env, fmt: str, *, header: bool = True) -> ExitStatus:
    from netsql.context import ExitStatus
    from netsql.registry import default_tables

    tables = default_tables()
    if fmt == "json":
        schema = [
            {
                "name": t.name,
                "description": t.description,
                "platforms": list(t.platforms),
                "columns": [{"name": c.name, "type": c.type, "description": c.description}
                            for c in t.columns],
                "examples": list(t.examples),
                "notes": t.notes,
            }
            for t in tables
        ]
        json.dump(schema, env.stdout, indent=2)
        env.stdout.write("\n")
        return ExitStatus.SUCCESS
    rs = ResultSet(["name", "columns", "description"], ["VARCHAR", "INTEGER", "VARCHAR"],
                   [(t.name, len(t.columns), t.description) for t in tables])
    printer = Printer(env, fmt, header=header)
    printer.formatter.write(rs, env.stdout, printer.ctx)
    return ExitStatus.SUCCESS
