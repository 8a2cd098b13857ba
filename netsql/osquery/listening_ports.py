"""osquery.listening_ports: osquery's definition, open sockets without a peer.

osquery's listening_ports is process_open_sockets' rows whose remote port is 0
(inet) and unix sockets with a path: so every bound UDP socket counts, and a TCP
socket in state LISTEN is not required (netsql's listening_ports does require it).
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
            if not r.get("path"):
                continue
        elif fam not in (pos.AF_INET, pos.AF_INET6) or r["remote_port"] != 0:
            continue
        keep.append({**r, "port": r["local_port"], "address": r.get("local_address")})
    return {k: [r.get(k) for r in keep] for k in NAMES}


TABLE = table(
    "listening_ports",
    "Processes with listening (bound) network sockets/ports (osquery's definition: "
    "sockets with no remote port, and named unix sockets).",
    [
        col("pid", "INTEGER", "Process (or thread) ID; -1 when no readable process holds "
            "the socket"),
        col("port", "INTEGER", "Transport layer port (0 for unix sockets)"),
        col("protocol", "INTEGER", "Transport protocol: 6 TCP, 17 UDP, ...; 0 for unix"),
        col("family", "INTEGER", "Network protocol: 2 IPv4, 10 IPv6, 1 unix"),
        col("address", "TEXT", "Specific address for bind ('0.0.0.0' or '::' for any)"),
        col("fd", "BIGINT", "Socket file descriptor number"),
        col("socket", "BIGINT", "Socket inode number"),
        col("path", "TEXT", "Path for UNIX domain sockets"),
        col("net_namespace", "TEXT", "The inode number of the network namespace"),
    ],
    collect,
    examples=("SELECT pid, port, protocol, address FROM listening_ports WHERE "
              "family IN (2, 10)",),
    notes="Includes unconnected UDP sockets and TCP sockets that are bound but not "
    "listening, as osquery's does; netsql's own listening_ports has only TCP LISTEN and "
    "unconnected UDP, with text protocol and family.",
)
