"""Declaring osquery's tables: its column types onto DuckDB's, hidden columns, schema.

osquery declares TEXT, INTEGER, BIGINT and DOUBLE (SQLite stores every integer in 64
bits); they become VARCHAR, INTEGER, BIGINT and DOUBLE here, so a table's DuckDB types
follow the spec one for one. Where a spec's INTEGER holds values past 2^31 (iptables'
packet and byte counters) the column is BIGINT and its description says so.
"""

from __future__ import annotations

from collections.abc import Sequence

from netsql.schema import Collector, Column, Table

SCHEMA = "osquery"
TYPES = {"TEXT": "VARCHAR", "INTEGER": "INTEGER", "BIGINT": "BIGINT", "DOUBLE": "DOUBLE"}


def col(name: str, osquery_type: str, description: str, *, hidden: bool = False,
        duck: str | None = None) -> Column:
    """A column declared with osquery's type (``duck``: a wider DuckDB type)."""
    return Column(name, duck or TYPES[osquery_type], description, hidden=hidden)


def table(name: str, description: str, columns: Sequence[Column], collect: Collector, *,
          examples: Sequence[str] = (), notes: str = "") -> Table:
    return Table(name=name, description=description, columns=tuple(columns),
                 collect=collect, examples=tuple(examples), notes=notes, schema=SCHEMA)


def visible(t: Table) -> list[str]:
    """The columns ``SELECT *`` shows."""
    return [c.name for c in t.columns if not c.hidden]
