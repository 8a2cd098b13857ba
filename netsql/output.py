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

#: Formats whose output is one document a program parses (several statements stay one).
DOCUMENT_FORMATS = ("csv", "json", "jsonl")


class Printer:
    """Results of one command, in one format.

    ``several``: more than one statement of the command returns rows. The data formats
    then stay one parseable document (docs/cli.md): ``json`` is one array holding each
    statement's array, ``jsonl`` tags each row with its ``statement`` (1, 2, ... among
    the statements that return rows), ``csv`` is one table: a ``statement`` column,
    then every statement's columns (same name, same column), written at
    :meth:`finish`. Human formats print one table after another.
    """

    def __init__(self, env: Env, fmt: str, *, header: bool = True,
                 several: bool = False) -> None:
        self.env = env
        self.formatter = get_formatter(fmt)
        self.ctx = OutputContext(tty=bool(env.stdout_isatty), width=env.width or 100,
                                 header=header, notice=env.notice)
        self.printed = 0
        self.several = several and self.formatter.name in DOCUMENT_FORMATS
        self._held: list[ResultSet] = []  # csv of several statements, until finish()

    def print(self, result: Result) -> None:
        if result.data is None:
            return
        data, out = result.data, self.env.stdout
        self.printed += 1
        if self.several and self.formatter.name == "csv":
            self._held.append(data)
            return
        if self.several and self.formatter.name == "jsonl":
            data = tagged([(self.printed, data)])
        if self.several and self.formatter.name == "json":
            out.write("[\n" if self.printed == 1 else ",\n")
        elif self.printed > 1 and self.formatter.name in HUMAN_FORMATS:
            out.write("\n")
        self.formatter.write(data, out, self.ctx)
        out.flush()

    def finish(self) -> None:
        """End the document (after the last result, or an error)."""
        if not self.several:
            return
        if self.formatter.name == "json":
            self.env.stdout.write("[]\n" if not self.printed else "]\n")
        elif self.formatter.name == "csv":
            self.formatter.write(tagged(list(enumerate(self._held, 1))), self.env.stdout,
                                 self.ctx)
            self._held = []
        self.env.stdout.flush()


def tagged(results: list[tuple[int, ResultSet]]) -> ResultSet:
    """Result sets as one: a ``statement`` column (each row's result number), then the
    columns of every result in order of first appearance; a row leaves the columns of
    other results NULL."""
    columns: dict[tuple[str, int], str] = {}  # (name, its nth use in one result) -> type
    places: list[list[int]] = []
    for _, rs in results:
        seen: dict[str, int] = {}
        for name, typ in zip(rs.columns, rs.types, strict=False):
            seen[name] = seen.get(name, -1) + 1
            columns.setdefault((name, seen[name]), typ)
        keys = list(columns)
        seen = {}
        place = []
        for name in rs.columns:
            seen[name] = seen.get(name, -1) + 1
            place.append(keys.index((name, seen[name])))
        places.append(place)
    rows: list[tuple[object, ...]] = []
    for (n, rs), place in zip(results, places, strict=True):
        for row in rs.rows:
            full: list[object] = [None] * len(columns)
            for i, v in zip(place, row, strict=True):
                full[i] = v
            rows.append((n, *full))
    return ResultSet(["statement", *(name for name, _ in columns)],
                     ["INTEGER", *columns.values()], rows)


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
