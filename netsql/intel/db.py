"""The intel database: one DuckDB file in the user's data directory, versioned.

``schema_version`` records each migration applied (the migrations: dbschema.py);
opening the file read-write applies the missing ones, each in its own transaction, so
a file made by an older netsql is upgraded in place and one made by a newer netsql is
refused rather than damaged. Query engines attach the file read-only as ``intel_db``
(several shells can read it at once; an import waits for none of them but fails,
saying so, while one holds it).

Here: opening (read-write, read-only) and migrating, the import of lists (Import, whose
staging area is staging.py), listing and removing sources, and attaching the file to a
query engine.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from netsql import dbconfig
from netsql.intel.dbschema import MIGRATIONS, SCHEMA_VERSION, IntelDbError, version
from netsql.intel.parsers import Batch, Spill
from netsql.intel.staging import STAGE, close_stage, open_stage, stage_table
from netsql.paths import foreign_owner

CATALOG = "intel_db"  # the name a query engine attaches the database as
#: DuckDB settings of the connections netsql intel opens.
CONFIG = dbconfig.settings()
# MIGRATIONS and SCHEMA_VERSION (dbschema.py) are read through this module's names:
# tests extend them here.


def _problem(path: str, exc: BaseException) -> IntelDbError:
    text = str(exc)
    if "lock" in text.lower():
        pid = re.search(r"PID (\d+)", text)
        who = f" (pid {pid.group(1)})" if pid else ""
        return IntelDbError(f"the intel database {path} is in use by another process{who}: "
                            "an import needs it to itself (close the netsql shells that use "
                            "it), and queries cannot read it while an import runs (retry "
                            "after it)")
    first = text.split("\n", 1)[0]
    return IntelDbError(f"cannot open the intel database {path}: {first}")


def migrate(con: duckdb.DuckDBPyConnection, path: str,
            migrations: Sequence[tuple[int, str]] | None = None) -> int:
    """Apply the migrations the open database lacks; returns its version afterwards."""
    migrations = MIGRATIONS if migrations is None else migrations
    catalog = str(con.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
    current = version(con, catalog, path)
    latest = migrations[-1][0]
    if current > latest:
        raise IntelDbError(f"{path} was made by a newer netsql (intel schema version "
                           f"{current}; this netsql knows up to {latest}): upgrade netsql")
    for number, sql in migrations:
        if number <= current:
            continue
        con.execute("BEGIN")
        try:
            con.execute(sql)
            con.execute("INSERT INTO schema_version VALUES (?, ?)", [number, _now()])
            con.execute("COMMIT")
        except duckdb.Error as exc:
            con.execute("ROLLBACK")
            raise IntelDbError(f"cannot upgrade {path} to intel schema version {number}: "
                               f"{str(exc).splitlines()[0]}") from None
        current = number
    return current


def open_db(path: str, *, create: bool = True,
            migrations: Sequence[tuple[int, str]] | None = None) -> duckdb.DuckDBPyConnection:
    """The database at ``path``, read-write and migrated (created when ``create``)."""
    if not os.path.exists(path):
        if not create:
            raise IntelDbError(f"no intel database at {path}: import a list first "
                               "(netsql intel import FILE)")
        other = foreign_owner(Path(os.path.abspath(path)), os.geteuid())
        if other is not None:  # netsql/paths.py: never a file in another user's place
            raise IntelDbError(f"not creating {path}: {other} belongs to another user "
                               "(run without sudo -E, or pass --intel-db)")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        con = duckdb.connect(path, config=CONFIG)
    except duckdb.Error as exc:
        raise _problem(path, exc) from None
    try:
        migrate(con, path, migrations)
    except BaseException:
        con.close()
        raise
    return con


def open_read_only(path: str) -> duckdb.DuckDBPyConnection:
    """The database at ``path`` for reading (while shells read it too); upgraded first
    when an older netsql made it."""
    if not os.path.exists(path):
        raise IntelDbError(f"no intel database at {path}")
    for _ in range(2):
        try:
            con = duckdb.connect(path, read_only=True,
                                 config=CONFIG)
        except duckdb.Error as exc:
            raise _problem(path, exc) from None
        catalog = str(con.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
        try:
            current = version(con, catalog, path)
        except BaseException:
            con.close()
            raise
        if current == SCHEMA_VERSION:
            return con
        con.close()
        if current > SCHEMA_VERSION:
            raise IntelDbError(f"{path} was made by a newer netsql (intel schema version "
                               f"{current}; this netsql knows up to {SCHEMA_VERSION}): "
                               "upgrade netsql")
        open_db(path, create=False).close()
    raise IntelDbError(f"cannot upgrade {path}")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


#: Lines of a list whose duplicates one pass finds (see Import._duplicates).
ROWS_PER_PASS = 2_000_000


class Imported:
    """What one list's import did: indicators by kind, duplicates, what it replaced."""

    def __init__(self, kinds: dict[str, int], duplicates: int, replaced: int | None) -> None:
        self.kinds, self.duplicates, self.replaced = kinds, duplicates, replaced
        self.indicators = sum(kinds.values())


class Import:
    """Lists streamed into the database, replacing their sources in one transaction:
    all of it or nothing (an error, Ctrl-C or SIGTERM leaves the database as it was).

    Parsed chunks go, as Arrow tables, to a staging database in a temporary directory
    beside the intel database (``stage(n)`` gives list n's
    :data:`netsql.intel.parsers.Spill`), which holds neither memory nor the intel
    database's transaction open; ``commit`` then finds the duplicates (an aggregate
    DuckDB spills to disk) and writes every list without them (the first line kept) in
    one transaction. Memory stays bounded by staging.IMPORT_MEMORY whatever the lists'
    size."""

    def __init__(self, con: duckdb.DuckDBPyConnection, directory: str | None = None) -> None:
        self.con = con
        if directory is None:
            row = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = "
                              "current_database()").fetchone()
            directory = os.path.dirname(os.path.abspath(str(row[0]))) if row and row[0] \
                else None
        self.directory = directory
        self._dir: Any = None

    def __enter__(self) -> Import:
        self._dir = open_stage(self.con, self.directory)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        close_stage(self.con, self._dir)

    def stage(self, n: int) -> Spill:
        """Where list ``n``'s chunks go."""
        return stage_table(self.con, f"{STAGE}.list{int(n)}")

    def _duplicates(self, n: int) -> str:
        """A staging table of the seq of every line that repeats an earlier one of list
        ``n`` (same kind and indicator). DuckDB's aggregate ran out of 32 MB at 43
        million keys (its hash table grows with the keys even as it spills), so the keys
        are split by hash into passes of about ROWS_PER_PASS lines each; a 64-bit
        hash first narrows each pass to the few keys that may repeat."""
        table, dups = f"{STAGE}.list{n}", f"{STAGE}.dups{n}"
        con = self.con
        row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        passes = max(1, -(-int(row[0] if row else 0) // ROWS_PER_PASS))
        con.execute(f"CREATE OR REPLACE TABLE {dups} (seq BIGINT)")
        for p in range(passes):
            part = f"SELECT *, hash(kind, indicator) AS h FROM {table} WHERE " \
                   f"hash(kind, indicator) % {passes} = {p}"
            # NOT MATERIALIZED: a materialized pass (read three times) held its lines
            # in memory and ran out of 32 MB at 3.75M lines with 10% repeats.
            con.execute(f"INSERT INTO {dups} WITH part AS NOT MATERIALIZED ({part}), keys AS "
                        "NOT MATERIALIZED (SELECT h FROM part GROUP BY h HAVING count(*) > 1), "
                        "first AS NOT MATERIALIZED (SELECT kind, indicator, min(seq) AS first "
                        "FROM part SEMI JOIN keys USING (h) GROUP BY ALL) SELECT s.seq FROM "
                        "part s JOIN first f USING (kind, indicator) WHERE s.seq > f.first")
        return dups

    def commit(self, lists: Sequence[tuple[Batch, str, str, str]]) -> list[Imported]:
        """Make each staged list ``(batch, source, path, sha256)`` (list n staged by
        ``stage(n)``, ``batch`` flushed) the whole of its source, in one transaction."""
        con = self.con
        dups = [self._duplicates(n) for n in range(len(lists))]
        done = []
        con.execute("BEGIN")
        try:
            for n, (batch, source, path, sha256) in enumerate(lists):
                table = f"{STAGE}.list{n}"
                row = con.execute("SELECT indicators FROM sources WHERE source = ?",
                                  [source]).fetchone()
                con.execute("DELETE FROM indicators WHERE source = ?", [source])
                con.execute("DELETE FROM sources WHERE source = ?", [source])
                con.execute("INSERT INTO indicators SELECT indicator, kind, $source, threat, "
                            "tags, first_seen::TIMESTAMP, line, host, lo::UHUGEINT, "
                            f"hi::UHUGEINT FROM {table} ANTI JOIN {dups[n]} USING (seq)",
                            {"source": source})
                staged = con.execute(f"SELECT count(*) FROM {table}").fetchone()
                kinds = dict(con.execute("SELECT kind, count(*) FROM indicators WHERE "
                                         "source = ? GROUP BY kind ORDER BY kind",
                                         [source]).fetchall())
                imported = Imported(kinds, 0, None if row is None else int(row[0]))
                imported.duplicates = (batch.duplicates + int(staged[0] if staged else 0)
                                       - imported.indicators)
                con.execute("INSERT INTO sources VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [source, batch.format, path, sha256, batch.lines,
                             imported.indicators, imported.duplicates,
                             sum(batch.skipped.values()), _now()])
                done.append(imported)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return done


def import_batch(con: duckdb.DuckDBPyConnection, batch: Batch, source: str, path: str,
                 sha256: str) -> Imported:
    """Replace ``source`` with ``batch`` (parsed whole) in one transaction."""
    with Import(con) as job:
        if len(batch):
            job.stage(0)(batch)
        else:
            job.stage(0)
        return job.commit([(batch, source, path, sha256)])[0]


LIST_SQL = """
SELECT s.source, s.format, s.indicators, coalesce(k.kinds, '') AS kinds, s.imported_at,
       s.path
FROM sources s
LEFT JOIN (SELECT source, string_agg(kind || ' ' || n, ', ' ORDER BY kind) AS kinds
           FROM (SELECT source, kind, count(*) AS n FROM indicators GROUP BY ALL)
           GROUP BY source) k USING (source)
ORDER BY s.source
"""


def list_sources(con: duckdb.DuckDBPyConnection) -> tuple[list[str], list[str],
                                                          list[tuple[Any, ...]]]:
    cur = con.execute(LIST_SQL)
    desc = cur.description or []
    return [d[0] for d in desc], [str(d[1]) for d in desc], cur.fetchall()


def sources(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute("SELECT source FROM sources ORDER BY source").fetchall()]


def remove(con: duckdb.DuckDBPyConnection, source: str) -> int:
    """Delete ``source``; returns how many indicators it had (-1: no such source)."""
    row = con.execute("SELECT indicators FROM sources WHERE source = ?", [source]).fetchone()
    if row is None:
        return -1
    con.execute("BEGIN")
    try:
        con.execute("DELETE FROM indicators WHERE source = ?", [source])
        con.execute("DELETE FROM sources WHERE source = ?", [source])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return int(row[0])


# -- for query engines ----------------------------------------------------------------
def attach(con: duckdb.DuckDBPyConnection, path: str) -> list[str]:
    """Attach ``path`` read-only as ``intel_db`` (upgrading an older file first); an
    empty in-memory stand-in when there is no file. Returns warnings."""
    from netsql.schema import sql_string

    if not os.path.exists(path):
        home = str(con.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
        con.execute(f"ATTACH ':memory:' AS {CATALOG}")
        con.execute(f"USE {CATALOG}")
        try:
            for _, sql in MIGRATIONS:
                con.execute(sql)
        finally:
            con.execute(f'USE "{home}"')
        return [f"no threat-intel lists: {path} does not exist (import one with "
                "`netsql intel import FILE`, or name another with --intel-db)"]

    def attach_ro() -> int:
        try:
            con.execute(f"ATTACH {sql_string(path)} AS {CATALOG} (READ_ONLY)")
        except duckdb.Error as exc:
            raise _problem(path, exc) from None
        try:
            return version(con, CATALOG, path)
        except BaseException:
            con.execute(f"DETACH {CATALOG}")
            raise

    current = attach_ro()
    if current != SCHEMA_VERSION:
        con.execute(f"DETACH {CATALOG}")
        if current > SCHEMA_VERSION:
            raise IntelDbError(f"{path} was made by a newer netsql (intel schema version "
                               f"{current}; this netsql knows up to {SCHEMA_VERSION}): "
                               "upgrade netsql")
        if not os.access(path, os.W_OK):
            raise IntelDbError(f"{path} needs an upgrade to intel schema version "
                               f"{SCHEMA_VERSION}: run `netsql intel list` as its owner")
        open_db(path, create=False).close()
        attach_ro()
    row = con.execute(f"SELECT count(*) FROM {CATALOG}.main.sources").fetchone()
    if not row or not row[0]:
        return [f"no threat-intel lists in {path} (import one with `netsql intel import FILE`)"]
    return []
