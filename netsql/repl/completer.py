"""Context-aware completion over prompt_toolkit Documents.

* ``.`` at the start: dot-command names, then each command's arguments (its
  ``Command.complete`` spec: choices, tables, formats, files, interfaces, or an extra
  source such as saved-query names).
* After FROM/JOIN/INTO/UPDATE (and commas in a FROM list): tables, then DuckDB's
  table functions.
* ``alias.`` or ``table.``: that table's columns, each with its type and description.
* Elsewhere: columns of the tables the statement names (before or after the cursor),
  aliases, DuckDB functions, SQL keywords.

Every name comes from the :class:`~netsql.repl.catalog.Catalog` (the table registry
plus DuckDB), the command list and the format list: there is no second list here.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Iterator, Sequence

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from netsql.formats import FORMATS
from netsql.formats.base import Formatter
from netsql.repl.catalog import Catalog, ColumnInfo
from netsql.repl.face import Command
from netsql.repl.sqltext import Context, context

Source = Callable[[], Iterable[tuple[str, str]]]


def _match(word: str, *groups: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Case-insensitive: names starting with ``word`` first (groups in order), then
    names containing it."""
    w = word.lower()
    first, then = [], []
    for group in groups:
        for name, meta in group:
            low = name.lower()
            if low.startswith(w):
                first.append((name, meta))
            elif w and w in low:
                then.append((name, meta))
    return first + then


def _quote(name: str) -> str:
    if name.isidentifier() and name == name.lower() and name.isascii():
        return name
    return '"' + name.replace('"', '""') + '"'


def _quote_table(name: str) -> str:
    """A table as a statement names it: another schema's (the catalog's "osquery.processes",
    "history.flows") as schema.table, each part quoted apart when it must be."""
    return ".".join(_quote(part) for part in name.split(".", 1))


def column_meta(col: ColumnInfo, tables: Sequence[str] = ()) -> str:
    where = f" [{', '.join(tables)}]" if len(tables) > 1 else ""
    return f"{col.type}{where}" + (f" · {col.description}" if col.description else "")


def interface_names() -> list[tuple[str, str]]:
    try:
        return [(name, "interface") for _, name in socket.if_nameindex()]
    except OSError:
        return []


class ShellCompleter(Completer):
    def __init__(self, catalog: Catalog, commands: Sequence[Command],
                 formats: Sequence[Formatter] | None = None,
                 sources: dict[str, Source] | None = None) -> None:
        self.catalog = catalog
        self.commands = list(commands)
        self.formats = list(FORMATS if formats is None else formats)
        self.sources: dict[str, Source] = {
            "table": lambda: [(t.name, t.description or t.kind) for t in catalog.tables()],
            "format": lambda: [(f.name, f.description) for f in self.formats],
            "command": lambda: [(n, c.help) for c in self.commands for n in c.names],
            "interface": interface_names,
        }
        self.sources.update(sources or {})
        self.paths = PathCompleter(expanduser=True)

    # -- entry point ----------------------------------------------------------------
    def get_completions(self, document: Document,
                        complete_event: CompleteEvent) -> Iterator[Completion]:
        text = document.text
        if text.lstrip().startswith(".") and "\n" not in document.text_before_cursor:
            yield from self._command(document, complete_event)
            return
        ctx = context(document.text_before_cursor, document.text_after_cursor)
        if ctx.kind == "none":
            return
        if (not ctx.word and ctx.kind != "table" and ctx.qualifier is None
                and not complete_event.completion_requested):
            return  # while typing, a menu on every space or new line is noise
        start = -len(ctx.word)
        for name, meta in self._sql(ctx):
            yield Completion(name, start, display_meta=meta)

    # -- dot-commands ---------------------------------------------------------------
    def _command(self, document: Document, event: CompleteEvent) -> Iterator[Completion]:
        before = document.text_before_cursor.lstrip()
        parts = before.split()
        if before.endswith(" "):
            parts.append("")
        if len(parts) <= 1:
            word = parts[0][1:] if parts else ""
            for name, meta in _match(word, self.sources["command"]()):
                yield Completion("." + name, -len(word) - 1, display_meta=meta)
            return
        cmd = next((c for c in self.commands if parts[0][1:].lower() in c.names), None)
        if cmd is None:
            return
        word = parts[-1]
        for spec in cmd.arg_spec(len(parts) - 2):
            if spec == "@file":
                sub = Document(word, len(word))
                yield from self.paths.get_completions(sub, event)
            elif spec.startswith("@"):
                source = self.sources.get(spec[1:])
                for name, meta in _match(word, source() if source else []):
                    yield Completion(name, -len(word), display_meta=meta)
            elif spec.lower().startswith(word.lower()):
                yield Completion(spec, -len(word))

    # -- SQL -------------------------------------------------------------------------
    def _sql(self, ctx: Context) -> list[tuple[str, str]]:
        cat = self.catalog
        if ctx.kind == "table":
            tables = [(_quote_table(t.name), t.description or t.kind) for t in cat.tables()]
            funcs = [(f.name, f"table function · {f.description}".rstrip(" ·"))
                     for f in cat.functions() if f.is_table]
            return _match(ctx.word, tables, funcs)
        if ctx.qualifier is not None:
            name = ctx.scope.aliases.get(ctx.qualifier) or ctx.scope.aliases.get(
                ctx.qualifier.lower()) or ctx.qualifier
            table = cat.table(name)
            if table is None:
                return []
            return _match(ctx.word, [(_quote(c.name), column_meta(c))
                                     for c in table.columns])
        keywords = [(k if not ctx.word or ctx.word[0].isupper() else k.lower(), "keyword")
                    for k in cat.keywords()]
        if ctx.kind == "alias":  # right after a table name: AS, JOIN, WHERE, ...
            return _match(ctx.word, keywords) if ctx.word else []
        columns: dict[str, tuple[ColumnInfo, list[str]]] = {}
        for tname in ctx.scope.tables:
            table = cat.table(tname)
            for c in table.columns if table else ():
                columns.setdefault(c.name, (c, []))[1].append(table.name if table else "")
        cols = [(_quote(n), column_meta(c, where)) for n, (c, where) in columns.items()]
        aliases = [(a, f"alias of {t}" if a != t else "table")
                   for a, t in ctx.scope.aliases.items()
                   if a.lower() != ctx.word.lower() and a in _alias_names(ctx)]
        funcs = [(f.name, f"{f.kind} · {f.description}".rstrip(" ·"))
                 for f in cat.functions() if not f.is_table or "scalar" in f.kind]
        if not ctx.word:
            return cols + aliases
        if ctx.start:  # the first word of a statement: SELECT, WITH, CREATE, ...
            return _match(ctx.word, keywords, cols, aliases, funcs)
        return _match(ctx.word, cols, aliases, funcs, keywords)


def _alias_names(ctx: Context) -> set[str]:
    """Aliases proper (not every table name twice) plus tables used without an alias."""
    named = {t for a, t in ctx.scope.aliases.items() if a != t}
    return {a for a, t in ctx.scope.aliases.items() if a != t or t not in named}
