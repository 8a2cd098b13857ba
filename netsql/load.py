"""Collected columns into DuckDB, in bulk (one INSERT per table, never row by row).

Two paths: Arrow (pyarrow arrays, registered and inserted) for large tables, and list
parameters unnested by DuckDB for small ones, which spares a one-liner the 90 ms import
of pyarrow. Only the columns a statement reads are converted; the rest load as NULL.

From VIEW_ROWS rows on, a table is not filled but served as a view over what was
collected: the columns the statement reads as registered Arrow arrays, the others as
NULLs written into the view's SELECT (nothing stored). DuckDB writes a column of NULLs
at about 8 ms per 1,000,000 rows, so ``SELECT count(*) FROM dns_queries`` over
1,000,000 live rows spent 0.2 s storing 25 columns nobody read, and every statement over
a big table paid that for each column it did not read. The view lasts until the
engine's next statement, which ``restore``s the empty table first (its DDL and comments:
a few milliseconds), so that the next statement's column analysis (engine.needs) sees
the table, not the view.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import duckdb

from netsql.escape import storable
from netsql.schema import Table

#: Tables up to this many rows load through list parameters instead of pyarrow (whose
#: import costs 90 ms); once something imported it, from this many rows on (2,000
#: processes: 23 ms as parameters, 6 ms through Arrow).
SMALL = 5000
SMALL_ARROW_LOADED = 500
#: Tables of fewer rows are inserted on one DuckDB thread.
ONE_THREAD_ROWS = 300_000
#: Tables of this many rows or more are served as views (the module's docstring).
#: Measured (sockets, 6 of its columns read, load and query, the view's later restore
#: included): 2,000 rows 8.4 ms filled, 15.6 as a view; 10,000 rows 11.6 and 12.1;
#: 50,000 rows 32.1 and 17.4.
VIEW_ROWS = 20_000


def row_count(data: Mapping[str, list[Any]]) -> int:
    """How many rows collected columns hold."""
    return len(next(iter(data.values()))) if data else 0


def as_view(data: Mapping[str, list[Any]]) -> bool:
    """Whether ``data`` is served as a view rather than filled into its table."""
    return row_count(data) >= VIEW_ROWS


def load(con: duckdb.DuckDBPyConnection, table: Table, data: Mapping[str, list[Any]],
         columns: frozenset[str] | None = None) -> int:
    """Replace ``table``'s rows with ``data`` in one columnar insert. Only ``columns``
    (those the statement reads; None: all) are converted, the rest load as NULL.

    Text that is not UTF-8 (collectors decode paths and command lines with
    surrogateescape, so that nothing is lost) cannot go into DuckDB: when a load fails
    on it, the read text columns are made storable (escape.storable: the byte 0xff
    becomes ``\\xff``) and the load runs again. Checking every string first would cost
    each statement milliseconds for what a few hosts have."""
    try:
        return _load(con, table, data, columns)
    except (UnicodeEncodeError, duckdb.InvalidInputException) as exc:
        if not isinstance(exc, UnicodeEncodeError) and "surrogate" not in str(exc):
            raise
    return _load(con, table, _storable(table, data, columns), columns)


def _storable(table: Table, data: Mapping[str, list[Any]],
              columns: frozenset[str] | None) -> dict[str, list[Any]]:
    out = dict(data)
    for col in table.columns:
        values = data.get(col.name)
        if values is None or (columns is not None and col.name not in columns):
            continue
        if col.type == "VARCHAR":
            out[col.name] = [storable(v) if isinstance(v, str) else v for v in values]
        elif col.type == "VARCHAR[]":
            out[col.name] = [v if v is None else [storable(x) if isinstance(x, str) else x
                                                  for x in v] for v in values]
    return out


def _load(con: duckdb.DuckDBPyConnection, table: Table, data: Mapping[str, list[Any]],
          columns: frozenset[str] | None) -> int:
    n = row_count(data)
    if as_view(data):
        return _load_view(con, table, data, columns, n)
    small = SMALL if "pyarrow" not in sys.modules else SMALL_ARROW_LOADED
    if n <= small or (columns is not None and not columns & data.keys()):
        return _load_small(con, table, data, columns, n)
    import pyarrow as pa

    arrays = []
    for col in table.columns:
        values = data.get(col.name)
        if values is None or (columns is not None and col.name not in columns):
            arrays.append(pa.nulls(n, arrow_type(pa, col.type)))
            continue
        arrays.append(_arrow_array(pa, col.type, values))
    batch = pa.table(arrays, names=table.column_names)
    con.execute(f"DELETE FROM {table.sql_name}")
    con.register("__netsql_load", batch)
    # Below a few hundred thousand rows DuckDB inserts faster on one thread (46,000
    # sockets: 13-18 ms instead of 24-32; at 1,000,000 rows two threads win).
    threads = None
    if n < ONE_THREAD_ROWS:
        row = con.execute("SELECT current_setting('threads')").fetchone()
        threads = int(row[0]) if row else None
        if threads is not None and threads > 1:
            try:
                con.execute("SET threads = 1")
            except duckdb.InvalidInputException:  # --safe locked the configuration
                threads = None
    try:
        con.execute(f"INSERT INTO {table.sql_name} SELECT * FROM __netsql_load")
    finally:
        con.unregister("__netsql_load")
        if threads is not None and threads > 1:
            con.execute(f"SET threads = {threads}")
    return n


def _arrow_array(pa: Any, sql_type: str, values: list[Any]) -> Any:
    if sql_type == "TIMESTAMP":
        micros = [None if v is None else int(v * 1_000_000) for v in values]
        return pa.array(micros, pa.int64()).cast(pa.timestamp("us"))
    return pa.array(values, arrow_type(pa, sql_type))


def _source(table: Table) -> str:
    """The name a view-served table's Arrow columns are registered under."""
    return "__netsql_rows_" + table.key.replace(".", "_")


def _kind(con: duckdb.DuckDBPyConnection, table: Table) -> str | None:
    """What ``table``'s name is now: "table", "view" or None (a swap interrupted
    between its DROP and its CREATE). Asked of the catalog, not remembered: a user's
    ROLLBACK can undo a swap too."""
    row = con.execute(
        "SELECT 'table' FROM duckdb_tables() WHERE schema_name = $1 AND table_name = $2 "
        "AND NOT temporary UNION ALL SELECT 'view' FROM duckdb_views() "
        "WHERE schema_name = $1 AND view_name = $2 AND NOT temporary",
        [table.schema or "main", table.name]).fetchone()
    return str(row[0]) if row else None


def _load_view(con: duckdb.DuckDBPyConnection, table: Table,
               data: Mapping[str, list[Any]], columns: frozenset[str] | None, n: int) -> int:
    """``table`` as a view of ``n`` rows over ``data`` (the module's docstring)."""
    read = [c for c in table.columns if data.get(c.name) is not None
            and (columns is None or c.name in columns)]
    src = _source(table)
    if read:
        import pyarrow as pa

        con.register(src, pa.table([_arrow_array(pa, c.type, data[c.name]) for c in read],
                                   names=[c.name for c in read]))
        origin = f'"{src}"'
    else:  # no column read (count(*)): n rows, no data at all
        origin = f"range({n})"
    wanted = {c.name for c in read}
    exprs = [f'"{src}"."{c.name}"' if c.name in wanted else f'NULL::{c.type} AS "{c.name}"'
             for c in table.columns]
    if _kind(con, table) == "table":
        con.execute(f"DROP TABLE {table.sql_name}")
    con.execute(";\n".join([f"CREATE OR REPLACE VIEW {table.sql_name} AS SELECT "
                            + ", ".join(exprs) + f" FROM {origin}",
                            *table.comments("VIEW")]))
    return n


def restore(con: duckdb.DuckDBPyConnection, table: Table) -> None:
    """``table`` an empty table again if it is served as a view (``load``), or if a
    signal stopped its swap half-way."""
    kind = _kind(con, table)
    if kind == "table":
        return
    if kind == "view":
        con.execute(f"DROP VIEW {table.sql_name}")
    try:
        con.unregister(_source(table))
    except duckdb.Error:  # (no column was read: nothing registered)
        pass
    con.execute(";\n".join([table.ddl(), *table.comments()]))


def _load_small(con: duckdb.DuckDBPyConnection, table: Table,
                data: Mapping[str, list[Any]], columns: frozenset[str] | None, n: int) -> int:
    """A few thousand rows (or any number when no column is wanted): list parameters
    unnested by DuckDB, which spares the import of pyarrow (90 ms, more than
    converting them takes)."""
    exprs, params = [], []
    for col in table.columns:
        values = data.get(col.name)
        if values is None or (columns is not None and col.name not in columns):
            exprs.append(f"NULL::{col.type}")
            continue
        if col.type == "TIMESTAMP":
            params.append([None if v is None else int(v * 1_000_000) for v in values])
            exprs.append(f"make_timestamp(unnest(${len(params)}::BIGINT[]))")
        else:
            params.append(values)
            exprs.append(f"unnest(${len(params)}::{col.type}[])")
    con.execute(f"DELETE FROM {table.sql_name}")
    if n:
        if not params:  # no column wanted: n rows of NULLs (count(*) still counts)
            con.execute(f"INSERT INTO {table.sql_name} SELECT " + ", ".join(exprs)
                        + " FROM range($1)", [n])
        else:
            con.execute(f"INSERT INTO {table.sql_name} SELECT " + ", ".join(exprs), params)
    return n


def arrow_type(pa: Any, sql_type: str) -> Any:
    """The Arrow type of a declared column type."""
    t = sql_type.upper()
    if t.endswith("[]"):
        return pa.list_(arrow_type(pa, t[:-2]))
    return {
        "INTEGER": pa.int32(), "BIGINT": pa.int64(), "UBIGINT": pa.uint64(),
        "DOUBLE": pa.float64(), "VARCHAR": pa.string(), "BOOLEAN": pa.bool_(),
        "TIMESTAMP": pa.timestamp("us"), "SMALLINT": pa.int16(),
    }[t]
