"""Writing the history tree: batches of rows to immutable Parquet files, whole date
partitions dropped by age (--retain) and size (--max-size), a finished day's small
files compacted into one per table, host and day.

Only this host's subtree (host=<name>) is ever written, dropped or compacted: a tree
that also holds other hosts' synced trees is theirs to manage.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from netsql.history import layout
from netsql.history.tables import RECORDED, Recorded

_seq = itertools.count()


def arrow_type(sql_type: str) -> Any:
    import pyarrow as pa

    if sql_type.endswith("[]"):
        return pa.list_(arrow_type(sql_type[:-2]))
    return {"INTEGER": pa.int32(), "BIGINT": pa.int64(), "VARCHAR": pa.string(),
            "DOUBLE": pa.float64(), "BOOLEAN": pa.bool_(),
            "TIMESTAMPTZ": pa.timestamp("us", tz="UTC")}[sql_type]


def arrow_schema(table: Recorded) -> Any:
    import pyarrow as pa

    return pa.schema([pa.field(c.name, arrow_type(c.type)) for c in table.columns])


def _micros(value: Any) -> int | None:
    """A time as microseconds since the epoch: from epoch seconds or a datetime (a naive
    one is taken as UTC, as every time netsql keeps is)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1_000_000)
    return int(float(value) * 1_000_000)


def _utc_day(micros: int | None, default: dt.date) -> dt.date:
    if micros is None:
        return default
    return dt.datetime.fromtimestamp(micros / 1_000_000, dt.UTC).date()


class Store:
    """One host's writer into a history tree."""

    def __init__(self, root: str | os.PathLike[str], host: str | None = None, *,
                 retain_days: int = 30, max_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.host = host or layout.hostname()
        self.retain_days = retain_days
        self.max_bytes = max_bytes
        #: Counters for capture_stats-like reporting: files written, rows, dropped days.
        self.files_written = 0
        self.rows_written = 0
        self.dates_dropped = 0

    # -- writing ---------------------------------------------------------------------

    def write(self, table: Recorded, cols: Mapping[str, Sequence[Any]],
              now: float | None = None) -> list[Path]:
        """Write one batch (column -> values; missing columns are NULL), one file per UTC
        date of ``table.time_column``. Returns the files written."""
        import pyarrow as pa

        n = max((len(v) for v in cols.values()), default=0)
        if n == 0:
            return []
        today = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC).date()
        arrays: dict[str, Any] = {}
        for c in table.columns:
            values = list(cols.get(c.name, [None] * n))
            if c.type == "TIMESTAMPTZ":
                values = [_micros(v) for v in values]
                arrays[c.name] = pa.array(values, pa.int64()).cast(arrow_type(c.type))
            else:
                arrays[c.name] = pa.array(values, arrow_type(c.type))
        batch = pa.table(arrays, schema=arrow_schema(table))
        stamps = batch.column(table.time_column).cast(pa.int64()).to_pylist()
        by_day: dict[dt.date, list[int]] = {}
        for i, micros in enumerate(stamps):
            by_day.setdefault(_utc_day(micros, today), []).append(i)
        written = []
        for day, rows in sorted(by_day.items()):
            part = batch if len(rows) == n else batch.take(pa.array(rows, pa.int64()))
            written.append(self._put(table.name, day, part))
        self.rows_written += n
        return written

    def _put(self, name: str, day: dt.date, part: Any, stem: str | None = None) -> Path:
        import pyarrow.parquet as pq

        directory = layout.date_dir(self.root, name, self.host, day)
        directory.mkdir(parents=True, exist_ok=True)
        stem = stem or f"{int(time.time() * 1000)}-{os.getpid()}-{next(_seq)}"
        final = directory / f"{stem}{layout.SUFFIX}"
        tmp = layout.temporary(final)
        pq.write_table(part, tmp, compression="zstd")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        self.files_written += 1
        return final

    # -- retention -------------------------------------------------------------------

    def retain(self, now: float | None = None) -> list[dt.date]:
        """Drop this host's date partitions older than ``retain_days``, then the oldest
        ones while the host's tree is larger than ``max_bytes`` (today's never).
        Returns the dates dropped."""
        today = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC).date()
        cutoff = today - dt.timedelta(days=self.retain_days)
        dropped = [day for day in self._dates() if day <= cutoff]
        for day in dropped:
            self._drop(day)
        if self.max_bytes is not None:
            for day in self._dates():
                if day >= today or self.size() <= self.max_bytes:
                    break
                self._drop(day)
                dropped.append(day)
        self.dates_dropped += len(dropped)
        return dropped

    def _dates(self) -> list[dt.date]:
        return sorted({day for t in RECORDED
                       for day, _ in layout.dates(self.root, t.name, self.host)})

    def _drop(self, day: dt.date) -> None:
        for t in RECORDED:
            shutil.rmtree(layout.date_dir(self.root, t.name, self.host, day),
                          ignore_errors=True)

    def size(self) -> int:
        total = 0
        for t in RECORDED:
            for dirpath, _dirs, files in os.walk(layout.host_dir(self.root, t.name,
                                                                 self.host)):
                for f in files:
                    try:
                        total += os.stat(os.path.join(dirpath, f)).st_size
                    except OSError:
                        continue
        return total

    # -- compaction ------------------------------------------------------------------

    def compact(self, now: float | None = None) -> int:
        """Merge each finished day's files into one per table (keeping only the newest
        observation of each life for keyed tables). Returns how many files went.

        The merged file is renamed into place before the small ones are removed: a
        reader that lists the directory between the two sees a life twice for that
        instant, and the views (which keep one observation per life) still count it
        once; event rows (dns_queries) can show twice for those milliseconds."""
        import duckdb

        from netsql import dbconfig

        today = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC).date()
        removed = 0
        for t in RECORDED:
            for day, directory in layout.dates(self.root, t.name, self.host):
                files = layout.data_files(directory)
                if day >= today or len(files) < 2:
                    continue
                con = duckdb.connect(config=dbconfig.settings())
                try:
                    names = ", ".join(f'"{c}"' for c in t.column_names)
                    sql = (f"SELECT {names} FROM read_parquet({[str(f) for f in files]!r}, "
                           "hive_partitioning = false)")
                    if t.key:
                        keys = ", ".join(f'"{k}"' for k in t.key)
                        sql += (f' QUALIFY row_number() OVER (PARTITION BY {keys} '
                                f'ORDER BY "{t.observed}" DESC) = 1')
                    rel = con.sql(sql)
                    fetch = getattr(rel, "to_arrow_table", None) or rel.arrow  # DuckDB 1.x
                    merged = fetch().cast(arrow_schema(t))
                finally:
                    con.close()
                self._put(t.name, day, merged, stem=f"compacted-{int(time.time() * 1000)}")
                for f in files:
                    f.unlink(missing_ok=True)
                removed += len(files)
        return removed
