"""``history.<table>``: views over a history tree, for one-liners, the shell, saved
queries and watch (``netsql --history DIR``).

Hive partitioning makes ``host`` and ``date`` columns, and a filter on them skips whole
directories. A keyed table (connections, processes) shows the newest observation of
each life. A table with no file yet is an empty view of the right columns. Every file
of a table is written with the same declared columns, so the files are not opened to
unify their schemas (union_by_name would read every file's footer, whatever the
filter).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from netsql.history import layout
from netsql.history.tables import RECORDED, Recorded
from netsql.schema import sql_string

SCHEMA = "history"


def view_sql(root: Path | None, table: Recorded) -> str:
    """The body of the view of one recorded table."""
    cols = ", ".join(f'CAST(NULL AS {c.type}) AS "{c.name}"' for c in table.columns)
    if root is None or not any(
            True for _ in root.glob(f"{table.name}/host=*/date=*/*{layout.SUFFIX}")):
        return f"SELECT {cols}, CAST(NULL AS VARCHAR) AS host, CAST(NULL AS DATE) AS date " \
               "WHERE false"
    names = ", ".join(f'"{c}"' for c in table.column_names)
    source = (f"read_parquet({sql_string(layout.glob(root, table.name))}, "
              "hive_partitioning = true, "
              "hive_types = {'host': VARCHAR, 'date': DATE})")
    body = f"SELECT {names}, host, date FROM {source}"
    if table.key:
        keys = ", ".join(f'"{k}"' for k in (*table.key, "host"))
        body += (f" QUALIFY row_number() OVER (PARTITION BY {keys} "
                 f'ORDER BY "{table.observed}" DESC) = 1')
    return body


def create_views(con: Any, root: str | Path | None) -> list[str]:
    """CREATE OR REPLACE the history schema's views on a DuckDB connection (empty ones
    without a tree); returns the qualified names."""
    root = Path(root) if root else None
    made = []
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    for table in RECORDED:
        name = f'{SCHEMA}."{table.name}"'
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {view_sql(root, table)}")
        made.append(f"{SCHEMA}.{table.name}")
    return made


NO_HISTORY = ("history.* is empty: no recorded tree; record one with `netsql serve "
              "--record DIR` and query it with --history DIR (docs/history.md)")


def setup_history(con: Any, state: Any) -> list[str]:
    """The engine's setup on first mention of ``history``: the views over
    ``state.history`` (through a recording netsql serve, its own tree, polled and
    flushed first so the views hold everything up to this statement), else empty
    views and a notice. Times compare in UTC (the session's time zone), as every time
    netsql keeps is UTC."""
    try:
        con.execute("SET TimeZone = 'UTC'")
    except Exception:  # a DuckDB built without ICU has no time zones but UTC anyway
        pass
    recorder = getattr(state, "recorder", None)
    root = getattr(state, "history", None)
    if recorder is not None:  # what it has seen up to this instant, on disk
        recorder.poll()
        recorder.flush()
        root = root or str(recorder.store.root)
    create_views(con, root)
    return [] if root else [NO_HISTORY]
