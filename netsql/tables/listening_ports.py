"""listening_ports: sockets that accept connections or receive datagrams."""

from __future__ import annotations

from netsql.collect import Collection, Need
from netsql.schema import Column, Columns, Table
from netsql.tables import sockets


def collect(coll: Collection, need: Need) -> Columns:
    src = sockets.read_sockets(coll)
    keep = [
        i
        for i, (proto, state, raddr) in enumerate(
            zip(src["protocol"], src["state"], src["remote_address"], strict=True)
        )
        if (proto == "tcp" and state == "LISTEN") or (proto == "udp" and raddr is None)
    ]
    cols: Columns = {k: [src[k][i] for i in keep] for k in
                     ("protocol", "family", "local_address", "local_port", "uid", "inode",
                      "net_namespace", "rx_queue")}
    sock_need = Need(
        None if need.columns is None else frozenset(need.columns & {"pid", "fd", "owners"}),
        need.pids,
    )
    sockets.attach_owners(coll, cols, sock_need)
    cols["address"] = cols.pop("local_address")
    cols["port"] = cols.pop("local_port")
    cols["backlog"] = [q if p == "tcp" else None
                       for q, p in zip(cols.pop("rx_queue"), cols["protocol"], strict=True)]
    cols["wildcard"] = [a in ("0.0.0.0", "::") for a in cols["address"]]
    return need.keep_pids(cols)


TABLE = Table(
    name="listening_ports",
    description="Sockets that accept connections (TCP LISTEN) or receive datagrams "
    "(unconnected UDP), with the owning process.",
    columns=(
        Column("pid", "INTEGER", "Process that holds the socket; NULL when not readable "
               "without root"),
        Column("fd", "INTEGER", "File descriptor number in that process"),
        Column("owners", "INTEGER[]", "Every pid holding the socket (pre-forked servers "
               "share one listener among workers)"),
        Column("protocol", "VARCHAR", "'tcp' or 'udp'"),
        Column("family", "VARCHAR", "'ipv4' or 'ipv6'"),
        Column("address", "VARCHAR", "Bound address ('0.0.0.0' or '::' for every address)"),
        Column("port", "INTEGER", "Bound port"),
        Column("wildcard", "BOOLEAN", "True when bound to every address of the host"),
        Column("backlog", "BIGINT", "TCP: connections waiting to be accepted; NULL for UDP"),
        Column("uid", "INTEGER", "User id that owns the socket"),
        Column("inode", "BIGINT", "Socket inode"),
        Column("net_namespace", "BIGINT", "Inode of the socket's network namespace"),
    ),
    collect=collect,
    examples=(
        "SELECT protocol, address, port, pid FROM listening_ports ORDER BY port",
        "SELECT l.port, p.name, p.username FROM listening_ports l JOIN processes p "
        "USING (pid) WHERE l.wildcard",
    ),
    notes="Derived from the same reads as `sockets`, in the same pass.",
)
