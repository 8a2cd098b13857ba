"""osquery.listening_ports: osquery's definition, open sockets without a peer.

osquery's listening_ports is process_open_sockets' rows less connected inet sockets and
unnamed unix sockets: every bound UDP socket counts, a TCP socket in state LISTEN is not
required (netsql's listening_ports does require it), and packet sockets are listed.
As in osquery, address is NULL for unix sockets and path NULL for the others; unlike
osquery (which says 0), a unix socket's inode is kept in ``socket``.
"""

from __future__ import annotations

from netsql.collect import Collection, Need
from netsql.osquery import process_open_sockets as pos
from netsql.osquery.spec import col, table
from netsql.schema import Columns

NAMES = ("pid", "port", "protocol", "family", "address", "fd", "socket", "path",
         "net_namespace")


def collect(coll: Collection, need: Need) -> Columns:
    keep = []
    for r in pos.with_owners(coll, Need(None, need.pids)):
        fam = r["family"]
        if fam == pos.AF_UNIX:
            if not r["path"]:
                continue  # anonymous
            keep.append({**r, "port": 0, "address": None})
        elif fam in (pos.AF_INET, pos.AF_INET6) and r["remote_port"] != 0:
            continue  # connected
        else:  # bound inet sockets, and packet sockets (as osquery)
            keep.append({**r, "port": r["local_port"], "address": r["local_address"],
                         "path": None})
    return {k: [r.get(k) for r in keep] for k in NAMES}


TABLE = table(
    "listening_ports",
    "Processes with listening (bound) network sockets/ports (osquery's definition: "
    "sockets with no remote port, and named unix sockets).",
    [
        col("pid", "INTEGER", "Process (or thread) ID; -1 when no readable process holds "
            "the socket"),
        col("port", "INTEGER", "Transport layer port (0 for unix sockets)"),
        col("protocol", "INTEGER", "Transport protocol: 6 TCP, 17 UDP, ...; 0 for unix; "
            "the Ethernet protocol for packet sockets"),
        col("family", "INTEGER", "Network protocol: 2 IPv4, 10 IPv6, 1 unix, 17 packet"),
        col("address", "TEXT", "Specific address for bind ('0.0.0.0' or '::' for any; "
            "'' for packet sockets, NULL for unix sockets)"),
        col("fd", "BIGINT", "Socket file descriptor number"),
        col("socket", "BIGINT", "Socket inode number (osquery says 0 for unix sockets)"),
        col("path", "TEXT", "Path for UNIX domain sockets; NULL for the others"),
        col("net_namespace", "TEXT", "The inode number of the network namespace"),
    ],
    collect,
    examples=("SELECT pid, port, protocol, address FROM listening_ports WHERE "
              "family IN (2, 10)",),
    notes="Includes unconnected UDP sockets and TCP sockets that are bound but not "
    "listening, as osquery's does; netsql's own listening_ports has only TCP LISTEN and "
    "unconnected UDP, with text protocol and family.",
)
