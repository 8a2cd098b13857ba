"""listening_ports: sockets that accept connections or receive datagrams."""

from __future__ import annotations

from netsql import backends
from netsql.backends.psutil_backend import linux_only
from netsql.collect import Collection, Need
from netsql.schema import Column, Columns, Table


def collect(coll: Collection, need: Need) -> Columns:
    return need.keep_pids(backends.current(coll).listening_ports(coll, need))


TABLE = Table(
    name="listening_ports",
    description="Sockets that accept connections (TCP LISTEN) or receive datagrams "
    "(unconnected UDP), with the owning process.",
    columns=linux_only("listening_ports", (
        Column("pid", "INTEGER", "Process that holds the socket; NULL when not readable "
               "without root"),
        Column("fd", "INTEGER", "File descriptor number in that process"),
        Column("owners", "INTEGER[]", "Every pid holding the socket (pre-forked servers "
               "share one listener among workers); as in sockets, one of them with the "
               "psutil backend on Linux"),
        Column("protocol", "VARCHAR", "'tcp' or 'udp'"),
        Column("family", "VARCHAR", "'ipv4' or 'ipv6'"),
        Column("address", "VARCHAR", "Bound address ('0.0.0.0' or '::' for every address)"),
        Column("port", "INTEGER", "Bound port"),
        Column("wildcard", "BOOLEAN", "True when bound to every address of the host"),
        Column("backlog", "BIGINT", "TCP: connections waiting to be accepted; NULL for UDP"),
        Column("uid", "INTEGER", "User id that owns the socket"),
        Column("inode", "BIGINT", "Socket inode"),
        Column("net_namespace", "BIGINT", "Inode of the socket's network namespace"),
    )),
    platforms=backends.PLATFORMS,
    collect=collect,
    examples=(
        "SELECT protocol, address, port, pid FROM listening_ports ORDER BY port",
        "SELECT l.port, p.name, p.username FROM listening_ports l JOIN processes p "
        "USING (pid) WHERE l.wildcard",
    ),
    notes="Derived from the same reads as `sockets`, in the same pass, with either "
    "backend.",
)
