"""What each recorded table holds: declared once, as the live tables are (schema.Column).

Types are what Spark, Trino and DuckDB all read alike: signed integers only (Spark
reads an unsigned 64-bit Parquet column as DECIMAL(20,0)), timestamps with time zone
in UTC. ``key`` names the columns that identify one connection or process life: a
life still going is written again at every flush with its latest values, and the
``history.<table>`` view keeps the newest observation of each (views.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from netsql.schema import Column


@dataclass(frozen=True)
class Recorded:
    name: str
    description: str
    columns: tuple[Column, ...]
    #: The column whose UTC date picks the date= partition a row is written to.
    time_column: str
    #: Columns that identify one life (connections, processes); () for events.
    key: tuple[str, ...] = ()
    #: The column that orders observations of one life (the newest wins).
    observed: str = ""

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


TS = "TIMESTAMPTZ"

DNS_QUERIES = Recorded(
    name="dns_queries",
    description="Every DNS transaction the recorder's capture saw, as the live table has "
    "it.",
    columns=(
        Column("ts", TS, "When the query was seen"),
        Column("net_namespace", "BIGINT", "Network namespace the packet was seen in"),
        Column("client_address", "VARCHAR", "Address that sent the query"),
        Column("client_port", "INTEGER", "Port that sent the query"),
        Column("server_address", "VARCHAR", "Address the query went to"),
        Column("server_port", "INTEGER", "Server port"),
        Column("transport", "VARCHAR", "'udp' or 'tcp'"),
        Column("trans_id", "INTEGER", "DNS transaction id"),
        Column("query", "VARCHAR", "Name asked for: lower case, no trailing dot"),
        Column("qtype", "VARCHAR", "Query type"),
        Column("rcode", "VARCHAR", "Response code; NULL when unanswered"),
        Column("answers", "VARCHAR[]", "Answer records' data"),
        Column("ttls", "INTEGER[]", "TTL of each answer"),
        Column("rtt_ms", "DOUBLE", "Milliseconds from query to response"),
        Column("pid", "INTEGER", "Process that sent the query; NULL when unknown"),
        Column("process", "VARCHAR", "Name of that process"),
        Column("uid", "INTEGER", "User id owning the sending socket"),
        Column("container_id", "VARCHAR", "Container of that process"),
        Column("status", "VARCHAR", "'answered', 'unanswered' or 'response_only'"),
    ),
    time_column="ts",
)

CONNECTIONS = Recorded(
    name="connections",
    description="One row per TCP or UDP connection lifetime: who held it, to where, "
    "from when to when, how many bytes.",
    columns=(
        Column("first_seen", TS, "When the recorder first saw the connection"),
        Column("last_seen", TS, "When it last saw it open (its close, within a poll)"),
        Column("pid", "INTEGER", "Process holding the socket; NULL when unknown"),
        Column("process", "VARCHAR", "Name of that process"),
        Column("path", "VARCHAR", "Its executable"),
        Column("uid", "INTEGER", "User id owning the socket"),
        Column("protocol", "VARCHAR", "'tcp' or 'udp'"),
        Column("family", "VARCHAR", "'ipv4' or 'ipv6'"),
        Column("local_address", "VARCHAR", "Local address"),
        Column("local_port", "INTEGER", "Local port"),
        Column("remote_address", "VARCHAR", "Remote address"),
        Column("remote_port", "INTEGER", "Remote port"),
        Column("remote_host", "VARCHAR", "Name the namespace's DNS answered for the "
               "remote address, when the capture saw it"),
        Column("bytes_sent", "BIGINT", "TCP: bytes sent (last seen value)"),
        Column("bytes_received", "BIGINT", "TCP: bytes received (last seen value)"),
        Column("state", "VARCHAR", "Last TCP state seen ('CLOSED' once gone)"),
        Column("net_namespace", "BIGINT", "Network namespace of the socket"),
        Column("container_id", "VARCHAR", "Container of the process"),
        Column("community_id", "VARCHAR", "Community ID flow hash (v1), as Zeek and "
               "Suricata log it"),
        Column("inode", "BIGINT", "Socket inode"),
    ),
    time_column="last_seen",
    key=("net_namespace", "inode", "first_seen"),
    observed="last_seen",
)

PROCESSES = Recorded(
    name="processes",
    description="One row per process life, short-lived ones included.",
    columns=(
        Column("pid", "INTEGER", "Process id"),
        Column("ppid", "INTEGER", "Parent process id"),
        Column("name", "VARCHAR", "Process name (comm)"),
        Column("path", "VARCHAR", "Executable"),
        Column("cmdline", "VARCHAR", "Command line"),
        Column("uid", "INTEGER", "Real user id"),
        Column("start_time", TS, "When the process started"),
        Column("end_time", TS, "When it exited; NULL while it runs"),
        Column("last_seen", TS, "When the recorder last saw it"),
        Column("net_namespace", "BIGINT", "Its network namespace"),
        Column("container_id", "VARCHAR", "Its container"),
    ),
    time_column="last_seen",
    key=("pid", "start_time"),
    observed="last_seen",
)

RECORDED = (DNS_QUERIES, CONNECTIONS, PROCESSES)


def recorded(name: str) -> Recorded:
    for table in RECORDED:
        if table.name == name:
            return table
    raise KeyError(name)
