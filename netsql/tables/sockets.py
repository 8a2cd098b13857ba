"""sockets: TCP and UDP sockets of every network namespace, with their owners."""

from __future__ import annotations

from netsql import backends
from netsql.backends.psutil_backend import linux_only
from netsql.collect import NO_DNS_SOURCE, Collection, Need
from netsql.schema import Column, Columns, Table


def attach_names(coll: Collection, cols: Columns, need: Need) -> None:
    """remote_host: the name captured DNS answers gave for remote_address in the
    socket's own network namespace (docs/dns.md: which answers name which sockets)."""
    n = len(cols["remote_address"])
    sources = coll.state.dns_sources() if need.wants("remote_host") else []
    if not sources:
        if need.wants("remote_host"):
            coll.warn(NO_DNS_SOURCE)
        cols["remote_host"] = [None] * n
        return
    namespaces = cols.get("net_namespace") or [None] * n
    names: dict[tuple[str, int | None], str | None] = {}
    out: list[str | None] = []
    for addr, ns in zip(cols["remote_address"], namespaces, strict=True):
        if addr is None:
            out.append(None)
            continue
        key = (addr, ns)
        if key not in names:
            bare = addr[7:] if addr.startswith("::ffff:") else addr
            names[key] = next((h for h in (s.name_for(bare, ns) for s in sources) if h),
                              None)
        out.append(names[key])
    cols["remote_host"] = out


def collect(coll: Collection, need: Need) -> Columns:
    cols = backends.current(coll).sockets(coll, need)
    attach_names(coll, cols, need)
    attach_first_seen(coll, cols, need)
    return need.keep_pids(cols)


def attach_first_seen(coll: Collection, cols: Columns, need: Need) -> None:
    """``first_seen``: when a recording netsql serve first saw the socket's connection
    (by inode), else NULL (as with the psutil backend, which has no inodes)."""
    recorder = coll.state.recorder
    inodes = cols.get("inode")
    if need.wants("first_seen") and recorder is not None and inodes is not None:
        cols["first_seen"] = recorder.first_seen(inodes)


TABLE = Table(
    name="sockets",
    description="TCP and UDP sockets (IPv4 and IPv6) of every network namespace, "
    "with the process that owns each one.",
    columns=linux_only("sockets", (
        Column("pid", "INTEGER", "Process that holds the socket (the lowest pid when "
               "several share it); NULL when no process holds it (TIME_WAIT) or its "
               "owner is not readable without root"),
        Column("fd", "INTEGER", "File descriptor number in that process"),
        Column("owners", "INTEGER[]", "Every pid holding the socket (shared after fork). "
               "The psutil backend on Linux knows one holder of a shared socket (psutil's "
               "pick, not always the lowest pid), which pid and owners then show"),
        Column("family", "VARCHAR", "'ipv4' or 'ipv6'"),
        Column("protocol", "VARCHAR", "'tcp' or 'udp'"),
        Column("local_address", "VARCHAR", "Local IP address ('0.0.0.0' or '::' for any)"),
        Column("local_port", "INTEGER", "Local port"),
        Column("remote_address", "VARCHAR", "Remote IP address; NULL when not connected"),
        Column("remote_port", "INTEGER", "Remote port; NULL when not connected"),
        Column("remote_host", "VARCHAR", "The name whose captured DNS answer gave "
               "remote_address in the socket's own network namespace (the most recent "
               "within its TTL; a capture file's answers, which carry no namespace, name "
               "sockets of any namespace); NULL when no such answer was seen. Unlike "
               "`ss -r`, the name the process looked up, not a reverse lookup"),
        Column("state", "VARCHAR", "TCP state ('ESTABLISHED', 'LISTEN', 'TIME_WAIT', ...); "
               "'ESTABLISHED' for connected UDP, NULL for unconnected UDP"),
        Column("first_seen", "TIMESTAMP", "When the connection was first seen (UTC), by a "
               "recording `netsql serve --record` this statement runs in; NULL otherwise, "
               "and for sockets it did not see begin (docs/history.md)"),
        Column("tx_queue", "BIGINT", "Bytes in the send queue (ss Send-Q)"),
        Column("rx_queue", "BIGINT", "Bytes in the receive queue (ss Recv-Q); for a "
               "listener, connections waiting to be accepted"),
        Column("uid", "INTEGER", "User id that owns the socket"),
        Column("inode", "BIGINT", "Socket inode (0 when no process holds it)"),
        Column("net_namespace", "BIGINT", "Inode of the socket's network namespace"),
    )),
    platforms=backends.PLATFORMS,
    collect=collect,
    examples=(
        "SELECT protocol, local_address, local_port, state FROM sockets "
        "WHERE state = 'LISTEN'",
        "SELECT s.pid, p.name, s.remote_address, s.remote_port FROM sockets s "
        "JOIN processes p USING (pid) WHERE s.state = 'ESTABLISHED'",
        "SELECT remote_address, count(*) AS n FROM sockets WHERE remote_address IS NOT NULL "
        "GROUP BY ALL ORDER BY n DESC LIMIT 10",
    ),
    notes="Asks the kernel (sock_diag netlink) once per network namespace, every "
    "namespace at once, each in a thread; /proc/<pid>/net/{tcp,tcp6,udp,udp6} where "
    "sock_diag is refused. The "
    "pid, fd and owners columns cost a scan of every /proc/*/fd; statements that do "
    "not use them skip it. Without root, sockets of other users' processes keep "
    "a NULL pid (a warning says how many). Elsewhere (or with NETSQL_BACKEND=psutil) "
    "psutil lists the sockets with their processes, always at the cost of the "
    "descriptor scan, and sees the current network namespace only; sockets with the "
    "same addresses, protocol and state (SO_REUSEPORT listeners) show as one row whose "
    "owners lists every holder. On macOS, without root only the sockets of this user's "
    "processes are listed (a warning says how many processes were skipped).",
)
