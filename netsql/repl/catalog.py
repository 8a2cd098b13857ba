"""What the shell knows about names: tables (the registry's virtual tables, then the
user's own tables and views), their columns with types and descriptions, DuckDB's
functions and keywords.

Virtual tables come straight from the table declarations (the one registry); the rest
is asked of DuckDB through ``query`` (a callable the shell provides, running on the
engine between statements), lazily and cached until :meth:`Catalog.invalidate`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netsql.schema import Table

Query = Callable[[str], Sequence[tuple[Any, ...]]]


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    description: str


@dataclass(frozen=True)
class TableInfo:
    name: str
    kind: str  # "virtual", "table" or "view"
    description: str
    columns: tuple[ColumnInfo, ...]

    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class FunctionInfo:
    name: str
    kind: str  # scalar, aggregate, table, macro, table_macro, window, pragma; "/"-joined
    description: str

    @property
    def is_table(self) -> bool:
        """Usable after FROM (range, read_csv, ...)."""
        return any(k in ("table", "table_macro") for k in self.kind.split("/"))


_USER_COLUMNS = """
SELECT CASE WHEN c.schema_name = 'main' THEN c.table_name
            ELSE c.schema_name || '.' || c.table_name END,
       coalesce(t.kind, 'table'), coalesce(t.comment, ''), c.column_name,
       c.data_type, coalesce(c.comment, '')
FROM duckdb_columns() c
LEFT JOIN (SELECT table_name AS name, 'table' AS kind, comment, database_name, schema_name
           FROM duckdb_tables()
           UNION ALL
           SELECT view_name, 'view', comment, database_name, schema_name
           FROM duckdb_views() WHERE NOT internal) t
  ON t.name = c.table_name AND t.database_name = c.database_name
     AND t.schema_name = c.schema_name
WHERE NOT c.internal AND c.database_name IN (current_database(), 'temp')
  AND c.table_name NOT LIKE '\\_\\_%' ESCAPE '\\'
ORDER BY c.schema_name <> 'main', c.schema_name, c.table_name, c.column_index
"""

_FUNCTIONS = """
SELECT function_name, string_agg(DISTINCT function_type, '/' ORDER BY function_type),
       coalesce(min(description), '')
FROM duckdb_functions()
WHERE function_name NOT LIKE '\\_\\_%' ESCAPE '\\' AND function_name SIMILAR TO '[a-z_][a-z0-9_]*'
GROUP BY function_name
ORDER BY function_name
"""

_KEYWORDS = "SELECT keyword_name FROM duckdb_keywords() ORDER BY keyword_name"


class Catalog:
    def __init__(self, tables: Mapping[str, Table] | Sequence[Table],
                 query: Query | None = None) -> None:
        items = tables.values() if isinstance(tables, Mapping) else tables
        self.virtual: dict[str, TableInfo] = {
            t.key: TableInfo(t.key, "virtual", t.description,
                              tuple(ColumnInfo(c.name, c.type, c.description)
                                    for c in t.columns))
            for t in items
        }
        self.query = query
        self._user: dict[str, TableInfo] | None = None
        self._functions: list[FunctionInfo] | None = None
        self._keywords: list[str] | None = None

    def invalidate(self, *, functions: bool = False) -> None:
        """Forget the user's tables (after a statement that may have changed them)."""
        self._user = None
        if functions:
            self._functions = None

    def _rows(self, sql: str) -> Sequence[tuple[Any, ...]]:
        if self.query is None:
            return []
        try:
            return self.query(sql)
        except Exception:  # completion must never break the prompt
            return []

    def user_tables(self) -> dict[str, TableInfo]:
        if self._user is None:
            grouped: dict[str, tuple[str, str, list[ColumnInfo]]] = {}
            for table, kind, comment, col, typ, col_comment in self._rows(_USER_COLUMNS):
                if table in self.virtual:  # osquery's are there as osquery.TABLE
                    continue
                entry = grouped.setdefault(table, (kind, comment, []))
                entry[2].append(ColumnInfo(col, typ, col_comment))
            self._user = {name: TableInfo(name, kind, comment, tuple(cols))
                          for name, (kind, comment, cols) in grouped.items()}
        return self._user

    def tables(self) -> list[TableInfo]:
        """Virtual tables in registry order, then the user's tables and views by name."""
        return list(self.virtual.values()) + list(self.user_tables().values())

    def table(self, name: str) -> TableInfo | None:
        found = self.virtual.get(name) or self.user_tables().get(name)
        if found is None:  # unquoted names are case-insensitive
            for t in self.tables():
                if t.name.lower() == name.lower():
                    return t
        return found

    def functions(self) -> list[FunctionInfo]:
        if self._functions is None:
            self._functions = [FunctionInfo(str(n), str(k), str(d))
                               for n, k, d in self._rows(_FUNCTIONS)]
        return self._functions

    def keywords(self) -> list[str]:
        if self._keywords is None:
            self._keywords = [str(r[0]).upper() for r in self._rows(_KEYWORDS)]
        return self._keywords
