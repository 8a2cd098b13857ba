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

from netsql.history import layout
from netsql.history.tables import RECORDED, Recorded
from netsql.schema import sql_string

SCHEMA = "history"


def view_sql(root: Path, table: Recorded) -> str:
    """The body of the view of one recorded table."""
    cols = ", ".join(f'CAST(NULL AS {c.type}) AS "{c.name}"' for c in table.columns)
    if not any(True for _ in root.glob(f"{table.name}/host=*/date=*/*{layout.SUFFIX}")):
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


def create_views(con: object, root: str | Path) -> list[str]:
    """CREATE OR REPLACE the history schema's views on a DuckDB connection; returns the
    qualified names."""
    root = Path(root)
    made = []
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")  # type: ignore[attr-defined]
    for table in RECORDED:
        name = f'{SCHEMA}."{table.name}"'
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {view_sql(root, table)}")  # type: ignore[attr-defined]
        made.append(f"{SCHEMA}.{table.name}")
    return made
