"""Declarations of virtual tables (one ``Table`` per table module) and of the SQL
made on first use (``Setup``).

A declaration is the single source for the DuckDB DDL, ``--list-tables``,
``.schema``, completion, docs/tables.md and the generic per-table tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

    from netsql.collect import Collection, Need, State

#: Column data for one table: column name -> list of values (all the same length).
Columns = dict[str, list[Any]]
Collector = Callable[["Collection", "Need"], Columns]


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # a DuckDB type: INTEGER, BIGINT, VARCHAR, BOOLEAN, TIMESTAMP, DOUBLE, VARCHAR[]
    description: str
    #: Left out of ``SELECT *`` (osquery's hidden columns; see netsql/osquery/dialect.py).
    hidden: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    collect: Collector
    examples: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ("linux",)
    #: Notes shown in the reference: what the table cannot see, privileges needed.
    notes: str = ""
    #: Columns whose values are expensive; a statement that uses none of them
    #: lets the collector skip that work (see Need.wants).
    costly: frozenset[str] = field(default_factory=frozenset)
    #: The DuckDB schema the table lives in ("" for main; "osquery" for netsql/osquery/).
    schema: str = ""

    @property
    def key(self) -> str:
        """The engine's name for the table: ``name``, or ``schema.name`` outside main."""
        return f"{self.schema}.{self.name}" if self.schema else self.name

    @property
    def sql_name(self) -> str:
        """The table's quoted, schema-qualified SQL name (main's too: with osquery mode's
        search_path an unqualified name may mean the osquery table of that name)."""
        return f'"{self.schema or "main"}"."{self.name}"'

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def ddl(self) -> str:
        cols = ", ".join(f'"{c.name}" {c.type}' for c in self.columns)
        made = f'CREATE SCHEMA IF NOT EXISTS "{self.schema}";\n' if self.schema else ""
        return f"{made}CREATE TABLE {self.sql_name} ({cols})"

    def comments(self, kind: str = "TABLE") -> list[str]:
        """The table's comments; ``kind`` VIEW for a view of its name (netsql/load.py)."""
        out = [f"COMMENT ON {kind} {self.sql_name} IS {sql_string(self.description)}"]
        for c in self.columns:
            out.append(
                f'COMMENT ON COLUMN {self.sql_name}."{c.name}" IS {sql_string(c.description)}'
            )
        return out


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Setup:
    """SQL made on first use: views, macros, attached databases (netsql.intel's, say).

    Like the stand-in tables, created only before the first statement whose lower-cased
    text contains one of ``words`` (or any catalog query), so start-up pays nothing for
    it. ``run(con, engine.state)`` returns warnings for that statement; ``tables`` are
    the virtual tables its SQL references, declared first.
    """

    name: str
    words: tuple[str, ...]
    run: Callable[[duckdb.DuckDBPyConnection, State], Sequence[str]]
    tables: tuple[str, ...] = ()
