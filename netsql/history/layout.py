"""The one rule for where recorded files live, how they are named, and which of them a
reader may see.

    DIR/<table>/host=<hostname>/date=<YYYY-MM-DD>/<unix ms>-<pid>-<seq>.parquet

A file is written under a hidden temporary name (``.<name>.tmp``: DuckDB's glob, Spark
and Trino all pass it over) and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
from pathlib import Path

SUFFIX = ".parquet"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def hostname() -> str:
    """This host's name as a partition value (no '/', '=', or spaces)."""
    return _SAFE.sub("_", socket.gethostname()) or "localhost"


def table_dir(root: Path, table: str) -> Path:
    return root / table


def host_dir(root: Path, table: str, host: str) -> Path:
    return table_dir(root, table) / f"host={host}"


def date_dir(root: Path, table: str, host: str, day: dt.date) -> Path:
    return host_dir(root, table, host) / f"date={day.isoformat()}"


def glob(root: Path, table: str) -> str:
    """The pattern readers use: every host and date of one table."""
    return str(table_dir(root, table) / "*" / "*" / f"*{SUFFIX}")


def dates(root: Path, table: str, host: str) -> list[tuple[dt.date, Path]]:
    """The date partitions of one table and host, oldest first."""
    found = []
    try:
        entries = list(os.scandir(host_dir(root, table, host)))
    except OSError:
        return []
    for entry in entries:
        if entry.is_dir() and entry.name.startswith("date="):
            try:
                found.append((dt.date.fromisoformat(entry.name[5:]), Path(entry.path)))
            except ValueError:
                continue
    return sorted(found)


def data_files(directory: Path) -> list[Path]:
    """The finished files of one partition (temporaries left out)."""
    try:
        return sorted(Path(e.path) for e in os.scandir(directory)
                      if e.name.endswith(SUFFIX) and not e.name.startswith("."))
    except OSError:
        return []


def temporary(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp")
