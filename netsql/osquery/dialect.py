"""osquery's SQL dialect over DuckDB, and osquery mode (``--osquery``, ``.osquery on``).

osquery runs SQLite; a statement written for it is rewritten here, token by token with
DuckDB's own tokenizer (so strings and comments are never touched), before it runs:

* a double-quoted word is a string literal unless some table has a column (or table)
  of that name, it follows AS, or it is qualified (``"t".x``): SQLite's own fallback;
* ``LIKE`` is ``ILIKE`` (SQLite's LIKE ignores ASCII case);
* ``strftime('%s', ...)`` is a BIGINT number of seconds; ``strftime(format, time,
  modifiers...)``, ``datetime(...)``, ``date(...)`` and ``time(...)`` take SQLite's
  arguments ('now', 'unixepoch', 'localtime', 'utc'), through macros in the osquery
  schema; ``regex_match(text, pattern, group)`` as osquery's;
* integer division (``SET integer_division = true``) and ``search_path`` osquery,main.

Outside osquery mode only hidden columns are handled: ``SELECT *`` over an osquery
table leaves them out (``* EXCLUDE (...)`` added at the star), as osquery does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import duckdb

from netsql.errors import NetsqlError
from netsql.osquery.spec import SCHEMA
from netsql.schema import Table


class Host(Protocol):
    """What the dialect uses of the engine it rewrites for (netsql.engine.Engine; the
    engine sits above this module, so it is named by its shape here)."""

    tables: dict[str, Table]
    con: duckdb.DuckDBPyConnection
    search_schemas: set[str]
    rewrite: Callable[[str], str] | None

    def declare(self, sql: str | None = None) -> list[str]: ...

#: SQLite's date and time functions -> macros taking SQLite's arguments.
#: (datetime needs no rewrite: the macro osquery.datetime is found through search_path,
#: so a result column keeps its SQLite name; DuckDB parses date(x) as a cast, and its
#: own strftime takes the arguments the other way round.)
FUNCTIONS = {"strftime": "sqlite_strftime", "date": "sqlite_date", "time": "sqlite_time"}

#: Tokens after which a double-quoted word is a name (an alias, a table being made or
#: read), never a string: SQLite reads these positions as identifiers too.
NAME_BEFORE = frozenset({"as", ".", "from", "join", "table", "view", "into", "update",
                         "exists", "macro", "function", "schema", "index"})

#: Type names, after which a double-quoted word in parentheses is a column being defined.
TYPE_WORDS = frozenset({
    "integer", "int", "int4", "int8", "bigint", "smallint", "tinyint", "hugeint", "ubigint",
    "uinteger", "text", "varchar", "char", "string", "double", "real", "float", "decimal",
    "numeric", "boolean", "bool", "timestamp", "timestamptz", "date", "time", "interval",
    "blob", "bytea", "uuid", "json", "struct", "map"})

#: Statements that may add names a double-quoted word could mean.
CATALOG_CHANGES = ("create", "alter", "drop", "attach", "detach", "import", "use", "load")

_NOW = "make_timestamp(epoch_us(get_current_timestamp()))"
MACROS = f"""
CREATE OR REPLACE MACRO {SCHEMA}.sqlite_mod(t, m) AS (CASE lower(m)
    WHEN 'unixepoch' THEN make_timestamp(CAST(TRY_CAST(t AS DOUBLE) * 1000000 AS BIGINT))
    WHEN 'localtime' THEN CAST(timezone('UTC', TRY_CAST(t AS TIMESTAMP)) AS TIMESTAMP)
    WHEN 'utc' THEN TRY_CAST(t AS TIMESTAMP)
    ELSE error('osquery mode: the SQLite time modifier ' || m || ' is not supported '
               || '(use now, unixepoch, localtime or utc)') END);
CREATE OR REPLACE MACRO {SCHEMA}.sqlite_ts(t) AS (CASE WHEN lower(CAST(t AS VARCHAR)) = 'now'
    THEN {_NOW} ELSE TRY_CAST(CAST(t AS VARCHAR) AS TIMESTAMP) END),
  (t, m) AS {SCHEMA}.sqlite_mod(CASE WHEN lower(CAST(t AS VARCHAR)) = 'now'
    THEN CAST({_NOW} AS VARCHAR) ELSE CAST(t AS VARCHAR) END, m),
  (t, m, n) AS {SCHEMA}.sqlite_mod({SCHEMA}.sqlite_mod(CASE
    WHEN lower(CAST(t AS VARCHAR)) = 'now' THEN CAST({_NOW} AS VARCHAR)
    ELSE CAST(t AS VARCHAR) END, m), n);
CREATE OR REPLACE MACRO {SCHEMA}.sqlite_epoch() AS epoch_us({_NOW}) // 1000000,
  (t) AS epoch_us({SCHEMA}.sqlite_ts(t)) // 1000000,
  (t, m) AS epoch_us({SCHEMA}.sqlite_ts(t, m)) // 1000000,
  (t, m, n) AS epoch_us({SCHEMA}.sqlite_ts(t, m, n)) // 1000000;
CREATE OR REPLACE MACRO {SCHEMA}.sqlite_strftime(f) AS strftime({_NOW}, f),
  (f, t) AS strftime({SCHEMA}.sqlite_ts(t), f),
  (f, t, m) AS strftime({SCHEMA}.sqlite_ts(t, m), f),
  (f, t, m, n) AS strftime({SCHEMA}.sqlite_ts(t, m, n), f);
"""
for _name, _fmt in (("datetime", "%Y-%m-%d %H:%M:%S"), ("sqlite_date", "%Y-%m-%d"),
                    ("sqlite_time", "%H:%M:%S")):
    MACROS += (f"CREATE OR REPLACE MACRO {SCHEMA}.{_name}() AS "
               f"strftime({_NOW}, '{_fmt}'),\n"
               f"  (t) AS strftime({SCHEMA}.sqlite_ts(t), '{_fmt}'),\n"
               f"  (t, m) AS strftime({SCHEMA}.sqlite_ts(t, m), '{_fmt}'),\n"
               f"  (t, m, n) AS strftime({SCHEMA}.sqlite_ts(t, m, n), '{_fmt}');\n")
MACROS += f"""
CREATE OR REPLACE MACRO {SCHEMA}.regex_match(s, pattern, i) AS
    nullif(regexp_extract(s, pattern, i), '');
"""


class Token:
    """One token: ``start`` and ``end`` are offsets in the UTF-8 bytes of the SQL, as
    DuckDB's tokenizer gives them; ``text`` is the token's text."""

    __slots__ = ("end", "kind", "start", "text")

    def __init__(self, start: int, end: int, kind: str, text: str) -> None:
        self.start, self.end, self.kind, self.text = start, end, kind, text


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def tokens(sql: str) -> list[Token]:
    """DuckDB's tokens of ``sql`` with their text (whitespace left out)."""
    raw = duckdb.tokenize(sql)
    data = _utf8(sql)
    out = []
    for i, (start, kind) in enumerate(raw):
        nxt = raw[i + 1][0] if i + 1 < len(raw) else len(data)
        piece = data[start:nxt].rstrip()
        out.append(Token(start, start + len(piece), str(kind).rsplit(".", 1)[-1],
                         piece.decode("utf-8", "surrogatepass")))
    return out


class Dialect:
    """The engine's statement rewrite (Engine.rewrite); ``osquery``: osquery mode."""

    def __init__(self, engine: Host, tables: Callable[[], list[Table]]) -> None:
        self.engine = engine
        self._tables = tables  # osquery's tables (netsql.registry.osquery_tables)
        self.osquery = False
        self._hidden: dict[str, list[str]] | None = None
        self._known: set[str] | None = None  # known_names(), until a statement changes them
        self._dirty = False  # the last statement may have changed them (asked anew next)

    def load_tables(self) -> dict[str, list[str]]:
        """Add osquery's tables to the engine (once: importing them costs a one-liner
        that does not use them 15 ms); their hidden columns by table name."""
        if self._hidden is None:
            ours = self._tables()
            for t in ours:
                self.engine.tables.setdefault(t.key, t)
            self._hidden = {t.name: [c.name for c in t.columns if c.hidden] for t in ours}
        return self._hidden

    def __call__(self, stmt: str) -> str:
        lower = stmt.lower()
        if not self.osquery and SCHEMA not in lower:
            return stmt
        hidden = self.load_tables()
        if self._dirty:
            self._known, self._dirty = None, False
        if lower.lstrip().startswith(CATALOG_CHANGES):
            self._known, self._dirty = None, True
        if self.osquery:
            try:
                stmt = self.sqlite(stmt)
            except Exception:  # not tokenizable: DuckDB's own error will say why
                return stmt
        if "*" in stmt and any(n in lower for n, cols in hidden.items() if cols):
            stmt = self.hide(stmt)
        return stmt

    # -- SQLite's dialect ----------------------------------------------------------
    def known_names(self) -> set[str]:
        """Column and table names (lower case) a double-quoted word may mean (asking
        DuckDB's catalog costs 20 ms: kept until a statement may change it)."""
        if self._known is not None:
            return self._known
        names = {n.lower() for t in self.engine.tables.values()
                 for n in (t.name, *t.column_names)}
        try:
            names.update(str(r[0]).lower() for r in self.engine.con.execute(
                "SELECT column_name FROM duckdb_columns() UNION "
                "SELECT table_name FROM duckdb_tables() UNION "
                "SELECT view_name FROM duckdb_views()").fetchall())
        except duckdb.Error:
            pass
        self._known = names
        return names

    def sqlite(self, stmt: str) -> str:
        toks = tokens(stmt)
        edits: list[tuple[int, int, str]] = []
        quoted = [i for i, t in enumerate(toks) if t.text.startswith('"')]
        names = set(self.known_names()) if quoted else set()
        names |= {toks[i + 1].text.strip('"').lower() for i, t in enumerate(toks[:-1])
                  if t.text.lower() == "as"}
        for i in quoted:
            t = toks[i]
            word = t.text[1:-1].replace('""', '"')
            prev = toks[i - 1].text.lower() if i else ""
            nxt = toks[i + 1].text if i + 1 < len(toks) else ""
            if prev in NAME_BEFORE or nxt == "." or word.lower() in names:
                continue
            if prev in ("(", ",") and nxt.lower() in TYPE_WORDS:
                continue  # a column definition: CREATE TABLE t ("c" INTEGER, ...)
            edits.append((t.start, t.end, "'" + word.replace("'", "''") + "'"))
        for i, t in enumerate(toks):
            low = t.text.lower()
            if low == "like" and t.kind == "keyword":
                edits.append((t.start, t.end, "ILIKE"))
            elif (low in FUNCTIONS and i + 1 < len(toks) and toks[i + 1].text == "("
                  and (i == 0 or toks[i - 1].text != ".")):
                edits.append(self._function(toks, i))
        data = _utf8(stmt)
        for start, end, text in sorted(edits, reverse=True):
            data = data[:start] + _utf8(text) + data[end:]
        return data.decode("utf-8", "surrogatepass")

    @staticmethod
    def _function(toks: list[Token], i: int) -> tuple[int, int, str]:
        name = toks[i].text.lower()
        if (name == "strftime" and i + 2 < len(toks)
                and toks[i + 2].text.replace('"', "'") == "'%s'"):
            # strftime('%s', ...): seconds as a number, as SQLite's text is used
            follow = toks[i + 3].text if i + 3 < len(toks) else ""
            if follow == ",":
                return toks[i].start, toks[i + 3].end, f"{SCHEMA}.sqlite_epoch("
            return toks[i].start, toks[i + 2].end, f"{SCHEMA}.sqlite_epoch("
        return toks[i].start, toks[i].end, f"{SCHEMA}.{FUNCTIONS[name]}"

    # -- hidden columns --------------------------------------------------------------
    def hide(self, stmt: str) -> str:
        """``* EXCLUDE (hidden...)`` at each star over osquery tables with hidden columns."""
        try:
            row = self.engine.con.execute("SELECT json_serialize_sql(?)", [stmt]).fetchone()
            tree = json.loads(row[0]) if row else {}
        except (duckdb.Error, ValueError):
            return stmt
        if tree.get("error") or len(tree.get("statements", [])) != 1:
            return stmt  # one statement at a time (Engine.parse calls again)
        raw = _utf8(stmt)
        inserts: list[tuple[int, str]] = []
        for node in _select_nodes(tree):
            tables = dict(self._base_tables(node.get("from_table")))
            for item in node.get("select_list", []):
                if (item.get("class") != "STAR" or item.get("columns") or item.get("expr")
                        or item.get("exclude_list") or item.get("qualified_exclude_list")):
                    continue
                rel = str(item.get("relation_name") or "").lower()
                hidden = sorted({c for alias, cols in tables.items()
                                 if not rel or alias == rel for c in cols})
                if hidden:
                    end = int(item["query_location"]) + int(item["query_location_length"])
                    inserts.append((end, " EXCLUDE (" + ", ".join(
                        f'"{c}"' for c in hidden) + ")"))
        for at, text in sorted(inserts, reverse=True):
            raw = raw[:at] + text.encode() + raw[at:]
        return raw.decode("utf-8", "surrogatepass")

    def _base_tables(self, node: Any) -> Iterator[tuple[str, list[str]]]:
        """(alias or name, hidden columns) of the osquery tables a FROM scans directly."""
        if not isinstance(node, dict):
            return
        if node.get("type") == "JOIN":
            yield from self._base_tables(node.get("left"))
            yield from self._base_tables(node.get("right"))
        elif node.get("type") == "BASE_TABLE":
            name = str(node.get("table_name", "")).lower()
            schema = str(node.get("schema_name", "")).lower()
            ours = schema == SCHEMA or (not schema and self.osquery)
            hidden = self.load_tables().get(name)
            if ours and hidden:
                yield (str(node.get("alias") or name).lower(), hidden)


def _select_nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "SELECT_NODE":
            yield node
        for v in node.values():
            yield from _select_nodes(v)
    elif isinstance(node, list):
        for v in node:
            yield from _select_nodes(v)


def set_mode(engine: Host, on: bool) -> None:
    """Turn osquery mode on or off in ``engine``: its names first, its dialect."""
    dialect = engine.rewrite
    if not isinstance(dialect, Dialect):
        raise NetsqlError("this engine has no osquery tables")
    con = engine.con
    dialect.load_tables()
    if on:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        con.execute(MACROS)
        # osquery's alias of etc_hosts (its spec: aliases=["hosts"]), hidden column left out
        engine.declare(f"SELECT * FROM {SCHEMA}.etc_hosts")
        con.execute(f"CREATE OR REPLACE VIEW {SCHEMA}.hosts AS "
                    f"SELECT address, hostnames FROM {SCHEMA}.etc_hosts")
        con.execute(f"SET search_path = '{SCHEMA},main'")
        con.execute("SET integer_division = true")
        engine.search_schemas.add(SCHEMA)
    else:
        con.execute("RESET search_path")
        con.execute("RESET integer_division")
        engine.search_schemas.discard(SCHEMA)
    dialect.osquery = on


def load_tables(engine: Host) -> None:
    """Add osquery's tables to a default engine now (the shell, for completion)."""
    if isinstance(engine.rewrite, Dialect):
        engine.rewrite.load_tables()


def is_on(engine: Host) -> bool:
    return isinstance(engine.rewrite, Dialect) and engine.rewrite.osquery
