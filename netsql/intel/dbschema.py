"""The intel database's schema: its tables as a list of migrations (append only), the
version a database is at, and IntelDbError, the one-line problem every intel database
module raises. netsql.intel.db applies the migrations when it opens a file.
"""

from __future__ import annotations

import duckdb

#: (version, SQL). Append only: a released migration never changes.
MIGRATIONS: list[tuple[int, str]] = [
    (1, """
CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL);
CREATE TABLE sources (
    source VARCHAR NOT NULL,      -- the list's name (--source), unique
    format VARCHAR NOT NULL,      -- hosts, domains, ips, urlhaus-csv, ...
    path VARCHAR,                 -- the file it was imported from
    sha256 VARCHAR,               -- of that file's bytes
    lines BIGINT,                 -- non-blank lines read
    indicators BIGINT,            -- indicators kept
    duplicates BIGINT,            -- repeated indicators dropped
    skipped BIGINT,               -- entries that are not indicators (localhost, hashes)
    imported_at TIMESTAMP NOT NULL
);
CREATE TABLE indicators (
    indicator VARCHAR NOT NULL,   -- as the list gives it (normalised domain, network, URL)
    kind VARCHAR NOT NULL,        -- 'domain', 'ip', 'cidr', 'url'
    source VARCHAR NOT NULL,
    threat VARCHAR,
    tags VARCHAR[],
    first_seen TIMESTAMP,
    line INTEGER,                 -- line of the source file
    host VARCHAR,                 -- the DNS name it matches: a domain, or a URL's host name
    lo UHUGEINT,                  -- first and last address it matches, IPv4 mapped into
    hi UHUGEINT                   --   ::ffff:0:0/96 (see netsql.intel.parsers)
);
"""),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


class IntelDbError(Exception):
    """A one-line, user-facing problem with the intel database."""


def version(con: duckdb.DuckDBPyConnection, catalog: str, path: str) -> int:
    """The schema version of ``catalog`` (0: an empty database)."""
    names = {r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? "
        "AND schema_name = 'main'", [catalog]).fetchall()}
    if "schema_version" not in names:
        if names:
            raise IntelDbError(f"{path} is a DuckDB database but not a netsql intel database")
        return 0
    row = con.execute(f'SELECT max(version) FROM "{catalog}".main.schema_version').fetchone()
    return int(row[0]) if row and row[0] is not None else 0
