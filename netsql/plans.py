"""Statement text and plans, as the engine reads them: DuckDB's multi-line errors as
one line (``one_line``), the words of a statement outside comments and strings
(``code_text``, ``identifiers``), and the nodes of an EXPLAIN plan (``plan_json``,
``walk``, ``as_list``, ``filter_columns``, ``table_key``)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import duckdb

from netsql import dbconfig
from netsql.errors import NetsqlError
from netsql.schema import Table

_LINE_RE = re.compile(r"^LINE (\d+): (.*)$")


def one_line(exc: BaseException, statement: str, known: Sequence[str]) -> NetsqlError:
    """DuckDB's multi-line error as one line, with the position kept apart."""
    text = str(exc)
    lines = text.split("\n")
    head: list[str] = []
    line_no = col = None
    i = 0
    while i < len(lines):
        m = _LINE_RE.match(lines[i])
        if m and i + 1 < len(lines) and "^" in lines[i + 1]:
            line_no = int(m.group(1))
            prefix = len(lines[i]) - len(m.group(2))
            col = lines[i + 1].index("^") - prefix + 1
            i += 2
            continue
        if lines[i].strip():
            head.append(lines[i].strip())
        i += 1
    message = "; ".join(head) or type(exc).__name__
    message = dbconfig.explain(message)
    m = re.match(r"Catalog Error: Table with name (.+?) does not exist!", message)
    if m:
        name = m.group(1)
        import difflib  # only for a statement that names an unknown table

        close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.7)
        message = f"no such table: {name}"
        if close:
            message += " (did you mean " + ", ".join(close) + "?)"
    m = re.match(r'Binder Error: Referenced column "(.+?)" not found', message)
    if m and f'"{m.group(1)}"' in statement:  # SQLite's (osquery's) double-quoted string
        message = (f"no column \"{m.group(1)}\": a string is written '{m.group(1)}' "
                   "(--osquery reads double-quoted words as strings, as SQLite does)")
    return NetsqlError(message, line=line_no, column=col, statement=statement)


def table_key(qualified: str) -> str:
    """The engine key of a scanned table: 'memory.main.sockets' -> 'sockets',
    'memory.osquery.processes' -> 'osquery.processes'."""
    parts = [p.strip('"') for p in qualified.split(".")]  # keywords come quoted: "time"
    if len(parts) >= 2 and parts[-2] != "main":
        return f"{parts[-2]}.{parts[-1]}"
    return parts[-1]


def code_text(sql: str) -> str:
    """``sql`` in lower case without comments and string literals (a table named in a
    comment or a string is not a reference)."""
    try:
        tokens = duckdb.tokenize(sql)
    except Exception:  # not SQL DuckDB can tokenize: keep the whole text
        return sql.lower()
    data = sql.encode("utf-8", "surrogatepass")  # the tokenizer's offsets are in bytes
    parts = []
    for i, (start, kind) in enumerate(tokens):
        if str(kind).endswith(("comment", "string_const")):
            continue
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(data)
        parts.append(data[start:end].decode("utf-8", "surrogatepass").strip().strip('"'))
    return " ".join(parts).lower()


def plan_json(text: str) -> Any:
    import json  # not for SELECT 1: only a statement whose plan names tables

    return json.loads(text)


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for child in node.get("children", []):
            yield from walk(child)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def filter_columns(filters: list[str], table: Table) -> list[str]:
    """Columns named in pushed-down filters (they need not be projected)."""
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", " ".join(filters)))
    return [c for c in table.column_names if c in words]


def identifiers(text: str) -> Iterator[str]:
    data = text.encode("utf-8", "surrogatepass")  # the tokenizer's offsets are in bytes
    for start, kind in duckdb.tokenize(text):
        if str(kind).endswith(("identifier", "keyword")):
            m = re.match(r'"((?:[^"]|"")*)"|[A-Za-z_][A-Za-z0-9_$]*',
                         data[start:].decode("utf-8", "surrogatepass"))
            if m:
                yield (m.group(1).replace('""', '"') if m.group(1) is not None
                       else m.group(0).lower())
