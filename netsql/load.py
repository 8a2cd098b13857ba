"""Collected columns into DuckDB, in bulk (one INSERT per table, never row by row).

Two paths: Arrow (pyarrow arrays, registered and inserted) for large tables, and list
parameters unnested by DuckDB for small ones, which spares a one-liner the 90 ms import
of pyarrow. Only the columns a statement reads are converted; the rest load as NULL.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import duckdb

from netsql.schema import Table

#: Tables up to this many rows load through list parameters instead of pyarrow (whose
#: import costs 90 ms); once something imported it, from this many rows on (2,000
#: processes: 23 ms as parameters, 6 ms through Arrow).
SMALL = 5000
SMALL_ARROW_LOADED = 500
#: Tables of fewer rows are inserted on one DuckDB thread.
ONE_THREAD_ROWS = 300_000


def load(con: duckdb.DuckDBPyConnection, table: Table, data: Mapping[str, list[Any]],
         columns: frozenset[str] | None = None) -> int:
    """Replace ``table``'s rows with ``data`` in one columnar insert. Only ``columns``
    (those the statement reads; None: all) are converted, the rest load as NULL."""
    n = len(next(iter(data.values()))) if data else 0
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
        if col.type == "TIMESTAMP":
            micros = [None if v is None else int(v * 1_000_000) for v in values]
            arrays.append(pa.array(micros, pa.int64()).cast(pa.timestamp("us")))
        else:
            arrays.append(pa.array(values, arrow_type(pa, col.type)))
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
