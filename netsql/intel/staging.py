"""An intel import's staging area: the temporary directory beside the intel database
where parsed lists wait (a staging database, and DuckDB's spill files) before
netsql.intel.db's Import writes them in one transaction; the settings that keep the
import's memory bounded; the removal of what a killed import left behind.
"""

from __future__ import annotations

import os
from typing import Any

import duckdb

from netsql.intel.parsers import Batch, Spill

#: What DuckDB may hold in memory during an import, on one thread; beyond it, it spills
#: to a temporary directory beside the database, so an import of any size stays within
#: 200 MB (tests/test_intel_limits.py; benchmarks/bench_intel.py --feed-mb measures it).
IMPORT_MEMORY = "32MB"
#: The name the staging database is attached as.
STAGE = "intel_stage"
#: The settings of an import's connection: one thread and no insertion order to keep
#: let DuckDB's aggregates and joins spill to disk instead of running out of memory.
IMPORT_SETTINGS = ("enable_progress_bar = false", f"memory_limit = '{IMPORT_MEMORY}'",
                   "threads = 1", "preserve_insertion_order = false")
_STAGE_COLUMNS = (("seq", "BIGINT"), ("indicator", "VARCHAR"), ("kind", "VARCHAR"),
                  ("threat", "VARCHAR"), ("tags", "VARCHAR[]"), ("first_seen", "VARCHAR"),
                  ("line", "INTEGER"), ("host", "VARCHAR"), ("lo", "VARCHAR"),
                  ("hi", "VARCHAR"))


_STAGE_PREFIX = ".netsql-import-"


def _remove_stale_stages(directory: str | None) -> None:
    """Remove what an import killed by SIGKILL left beside the database: the staging
    directories of processes that are gone (their names carry the pid)."""
    import shutil

    try:
        names = os.listdir(directory or ".")
    except OSError:
        return
    for name in names:
        pid = name[len(_STAGE_PREFIX):].split("-", 1)[0]
        if not name.startswith(_STAGE_PREFIX) or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running (or another user's process)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(directory or ".", name), ignore_errors=True)
        except OSError:
            continue


def open_stage(con: duckdb.DuckDBPyConnection, directory: str | None) -> Any:
    """Set ``con`` up for an import and attach a staging database as STAGE, in a
    temporary directory in ``directory``; returns that directory (a
    tempfile.TemporaryDirectory, for close_stage)."""
    import tempfile

    from netsql.schema import sql_string

    # Beside the database: the same file system as what it stages for (not a /tmp
    # in memory), and the owner's own directory (netsql/paths.py) under sudo.
    _remove_stale_stages(directory)
    tmp = tempfile.TemporaryDirectory(prefix=f"{_STAGE_PREFIX}{os.getpid()}-", dir=directory)
    for setting in (*IMPORT_SETTINGS, f"temp_directory = "
                    f"{sql_string(os.path.join(tmp.name, 'spill'))}"):
        con.execute(f"SET {setting}")
    try:
        con.execute(f"ATTACH {sql_string(os.path.join(tmp.name, 'stage.duckdb'))} "
                    f"AS {STAGE}")
    except BaseException:
        tmp.cleanup()
        raise
    return tmp


def close_stage(con: duckdb.DuckDBPyConnection, tmp: Any) -> None:
    """Detach the staging database and remove its directory (open_stage's)."""
    try:
        con.execute(f"DETACH {STAGE}")
    finally:
        tmp.cleanup()


def stage_table(con: duckdb.DuckDBPyConnection, table: str) -> Spill:
    """A new staging table ``table`` (in STAGE), and what writes a list's chunks to it."""
    import pyarrow as pa

    columns = ", ".join(f"{name} {kind}" for name, kind in _STAGE_COLUMNS)
    con.execute(f"CREATE OR REPLACE TABLE {table} ({columns})")
    schema = pa.schema([("seq", pa.int64()), ("indicator", pa.string()),
                        ("kind", pa.string()), ("threat", pa.string()),
                        ("tags", pa.list_(pa.string())), ("first_seen", pa.string()),
                        ("line", pa.int32()), ("host", pa.string()), ("lo", pa.string()),
                        ("hi", pa.string())])

    def spill(batch: Batch) -> None:
        start = batch.spilled
        chunk = pa.Table.from_arrays([
            pa.array(range(start, start + len(batch)), pa.int64()), batch.indicator,
            batch.kind, batch.threat, batch.tags, batch.first_seen, batch.line,
            batch.host, batch.lo, batch.hi], schema=schema)
        con.register("intel_chunk", chunk)
        try:
            con.execute(f"INSERT INTO {table} SELECT * FROM intel_chunk")
        finally:
            con.unregister("intel_chunk")

    return spill
