"""A statement's rows as they come: Python rows a chunk at a time, or rows DuckDB
renders as text (csv, json, jsonl; see formats/sqlrow.py) read as Arrow batches.
The engine runs the statement; this module streams what it returns."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any

import duckdb

from netsql.errors import Interrupted, NetsqlError
from netsql.formats.base import ResultSet

# Rows stream from DuckDB in chunks of this many (the first chunk small: quick to show).
FIRST_CHUNK = 1000
CHUNK = 20_000
# Rows DuckDB renders as text come in Arrow batches of this many; only for results the
# plan expects to be at least RENDER_ROWS long (below, the Python encoders are quicker
# than importing pyarrow, 100 ms).
TEXT_BATCH = 50_000
RENDER_ROWS = 50_000
#: Rendered results the plan expects to be shorter than this are fetched as Python
#: strings, not through an Arrow reader, whose set-up costs more than it saves there
#: (measured, `SELECT * FROM processes` of 2,000 as csv: 10 ms fetched against 14 ms).
SMALL_TEXT = 10_000

#: ``render(columns, types)``: SQL over ``c0, c1, ...`` rendering one row as text, or
#: None (see netsql.formats.sqlrow).
Render = Callable[[list[str], list[str]], "str | None"]
#: An error of DuckDB's as the one-line error the user sees.
Translate = Callable[[BaseException], NetsqlError]


def rows_of(cur: duckdb.DuckDBPyConnection, error: Translate
            ) -> Generator[list[tuple[Any, ...]], None, None]:
    """The rows of the statement ``cur`` runs, a chunk at a time; a result left unread
    is cancelled."""
    size, done = FIRST_CHUNK, False
    try:
        while rows := cur.fetchmany(size):
            yield rows
            size = CHUNK
        done = True
    except duckdb.InterruptException:
        done = True
        raise Interrupted("interrupted") from None
    except duckdb.Error as exc:
        done = True
        raise error(exc) from None
    except RuntimeError as exc:  # a signal (SIGINT, SIGTERM) arrived during a fetch
        if "interrupt" not in str(exc).lower():
            raise
        done = True
        raise Interrupted("interrupted") from None
    finally:
        if not done:
            try:
                cur.abort()
            except duckdb.Error:
                pass


def estimated_rows(con: duckdb.DuckDBPyConnection, stmt: str,
                   args: dict[str, Any] | None) -> int:
    """The planner's estimate of the rows ``stmt`` returns (a LIMIT without one: its
    input's); 0 when it has none."""
    import json

    try:
        q = "EXPLAIN (FORMAT JSON) " + stmt
        rows = con.execute(q, args).fetchall() if args else con.execute(q).fetchall()
        stack: list[Any] = [json.loads(rows[0][1])]
        while stack:
            node = stack.pop(0)
            if isinstance(node, list):
                stack[:0] = node
                continue
            if not isinstance(node, dict):
                continue
            info = node.get("extra_info")
            estimate = info.get("Estimated Cardinality") if isinstance(info, dict) else None
            if estimate is not None and str(estimate).isdigit() and int(estimate) > 0:
                return int(estimate)
            stack[:0] = node.get("children", [])
    except (duckdb.Error, IndexError, ValueError):
        pass
    return 0


def rendered(con: duckdb.DuckDBPyConnection, stmt: str, args: dict[str, Any] | None,
             render: Render, error: Translate, min_rows: int = RENDER_ROWS
             ) -> ResultSet | None:
    """The result of SELECT ``stmt`` as text DuckDB renders, when the plan expects at
    least ``min_rows`` rows and ``render`` has SQL for its columns' types; else None
    (nothing ran)."""
    estimate = estimated_rows(con, stmt, args) if min_rows else None
    if estimate is not None and estimate < min_rows:
        return None
    try:
        rel = con.sql(stmt, params=args)  # binds, runs nothing
        cols, types = list(rel.columns), [str(t) for t in rel.types]
    except duckdb.Error:  # the statement's run says what is wrong, with line and column
        return None
    expr = render(cols, types)
    if expr is None:
        return None
    names = ", ".join(f"c{i}" for i in range(len(cols)))
    sql = f"SELECT {expr} FROM (\n{stmt}\n) AS __netsql_rows({names})"

    def shifted(exc: BaseException) -> NetsqlError:
        err = error(exc)
        if err.line is not None:
            err.line = max(err.line - 1, 1)  # the statement starts on line 2
        return err

    try:
        if estimate is not None and estimate < SMALL_TEXT:
            cur = con.execute(sql, args) if args else con.execute(sql)
            return ResultSet(cols, types, text=_fetched(cur, shifted))
        reader = con.sql(sql, params=args).to_arrow_reader(TEXT_BATCH)
    except (duckdb.Error, OSError):  # not a statement that reads as a subquery
        return None
    return ResultSet(cols, types, text=_text_of(reader, shifted))


def _fetched(cur: duckdb.DuckDBPyConnection, error: Translate) -> Iterator[bytes]:
    """The text of rendered rows fetched as strings, a chunk at a time."""
    chunks = rows_of(cur, error)
    try:
        for rows in chunks:
            yield "".join([row[0] for row in rows]).encode()
    finally:  # (a result left unread is cancelled: rows_of)
        chunks.close()


def _text_of(reader: Any, error: Translate) -> Iterator[bytes]:
    from netsql.formats.sqlrow import text_of

    try:
        for batch in reader:
            yield text_of(batch)
    except OSError as exc:  # pyarrow hands DuckDB's errors on as OSError
        if "interrupt" in str(exc).lower():
            raise Interrupted("interrupted") from None
        raise error(exc) from None
    finally:
        reader.close()
