"""flows: traffic per connection, nettop/flowtop style.

TCP connections come with the kernel's own per-socket counters (sock_diag with
TCP_INFO, what `ss -ti` shows): no capture, no setup. UDP and ICMP flows appear while
live capture runs, counted from the wire per 5-tuple.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from netsql import procfs
from netsql.backends import require_linux
from netsql.backends.linux_sockets import TCP_STATE_TEXT, attach_owners, read_sockets
from netsql.collect import Collection, Need, milliseconds
from netsql.schema import Column, Columns, Table
from netsql.tables.sockets import attach_first_seen, attach_names

INET_DIAG_INFO = 2
# TCP states that have a full socket with TCP_INFO (not LISTEN, TIME_WAIT, NEW_SYN_RECV).
_STATES = sum(1 << s for s in (1, 2, 3, 4, 5, 7, 8, 9, 11))
NAMES = ("pid", "process", "protocol", "family", "local_address", "local_port",
         "remote_address", "remote_port", "state", "bytes_sent", "bytes_acked",
         "bytes_received", "bytes_retrans", "segs_out", "segs_in", "retransmits", "rtt",
         "last_send", "last_receive", "packets_out", "packets_in", "uid", "inode",
         "net_namespace", "source")


def tcp_rows(coll: Collection, cols: Columns) -> None:
    from netsql import sockdiag

    own = procfs.own_netns()
    if coll.tables & {"sockets", "listening_ports"}:  # their dump carries TCP_INFO
        read_sockets(coll)
        shared: dict[int, list[Any]] = coll.once("tcp_info", dict)
        for ns, records in shared.items():
            for family, fname in ((socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6")):
                _dump_tcp([r for r in records if r[0] == family and (1 << r[1]) & _STATES],
                          fname, ns, cols)
        return
    for ns, handle in procfs.namespaces(coll).items():
        try:
            sock = sockdiag.open_socket(None if ns == own else handle,
                                        expect=None if ns == own else ns)
        except OSError:
            continue  # another namespace without CAP_SYS_ADMIN: not visible
        try:
            for family, fname in ((socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6")):
                _dump_tcp(sockdiag.rows(sock, family, socket.IPPROTO_TCP, states=_STATES,
                                        info=True), fname, ns, cols)
        finally:
            sock.close()


_NO_INFO = (None,) * 10
#: flows columns filled from sockdiag's tcp_info counters, in their order there.
_TCP_COLUMNS = ("bytes_sent", "bytes_acked", "bytes_received", "bytes_retrans", "segs_out",
                "segs_in", "retransmits", "rtt", "last_send", "last_receive")


def _dump_tcp(rows: list[Any], fname: str, ns: int, cols: Columns) -> None:
    """Append one namespace's TCP sockets (sockdiag rows with tcp_info counters) to
    ``cols``, a column at a time."""
    if not rows:
        return
    _fam, state, lport, rport, local, remote, _rq, _wq, uid, inode, tcp = zip(*rows,
                                                                              strict=True)
    k = len(rows)
    for name, values in (("pid", [None] * k), ("process", [None] * k),
                         ("protocol", ["tcp"] * k), ("family", [fname] * k),
                         ("local_address", local), ("local_port", lport),
                         ("remote_address", remote), ("remote_port", rport),
                         ("state", list(map(TCP_STATE_TEXT.__getitem__, state))),
                         ("packets_out", [None] * k), ("packets_in", [None] * k),
                         ("uid", uid), ("inode", inode), ("net_namespace", [ns] * k),
                         ("source", ["tcp_info"] * k)):
        cols[name].extend(values)
    counters = zip(*[t or _NO_INFO for t in tcp], strict=True)
    for name, values in zip(_TCP_COLUMNS, counters, strict=True):
        cols[name].extend(values)


def captured_rows(coll: Collection, cols: Columns) -> None:
    capture = coll.state.capture
    if capture is None or not hasattr(capture, "flow_snapshot"):
        return
    flows = capture.flow_snapshot()
    if not flows:
        return
    now = time.time()
    # A captured UDP flow belongs to the socket bound to its local port, if any, in the
    # namespace the flow was seen in.
    udp_inode: dict[tuple[int | None, str, int], tuple[int, int]] = {}
    if any(f.protocol == "udp" for f in flows):
        socks = read_sockets(coll)
        for proto, addr, port, inode, uid, sns in zip(
                socks["protocol"], socks["local_address"], socks["local_port"],
                socks["inode"], socks["uid"], socks["net_namespace"], strict=True):
            if proto == "udp":
                udp_inode.setdefault((sns, addr, port), (inode, uid))
    for f in flows:
        hit = None
        ns = f.net_namespace
        if f.protocol == "udp" and f.local_port is not None:
            hit = udp_inode.get((ns, f.local_address, f.local_port)) or udp_inode.get(
                (ns, "::" if f.family == "ipv6" else "0.0.0.0", f.local_port))
        row = {
            "protocol": f.protocol, "family": f.family, "local_address": f.local_address,
            "local_port": f.local_port, "remote_address": f.remote_address,
            "remote_port": f.remote_port, "bytes_sent": f.bytes_out,
            "bytes_received": f.bytes_in, "packets_out": f.packets_out,
            "packets_in": f.packets_in, "last_send": None, "last_receive": now - f.last_seen,
            "inode": hit[0] if hit else None, "uid": hit[1] if hit else None,
            "net_namespace": ns, "source": "capture",
        }
        for k in NAMES:
            cols[k].append(row.get(k))


#: Why flows is empty off Linux (one line, for the user).
NEEDS_LINUX = ("flows needs Linux: TCP counters come from sock_diag (TCP_INFO) and UDP/ICMP "
               "counts from AF_PACKET capture; on macOS and the BSDs it would need the "
               "BPF devices (/dev/bpf*) and the per-socket counters nettop reads, which "
               "netsql does not read yet")


def collect(coll: Collection, need: Need) -> Columns:
    require_linux(NEEDS_LINUX)
    cols: Columns = {k: [] for k in NAMES}
    tcp_rows(coll, cols)
    cols["rtt"] = milliseconds(cols["rtt"])  # sockdiag gives seconds
    captured_rows(coll, cols)
    inodes = cols["inode"]
    cols["inode"] = [i if i else 0 for i in inodes]
    attach_owners(coll, cols, Need(None if need.columns is None else
                                   frozenset(need.columns & {"pid", "process"}) | (
                                       {"pid"} if "process" in need.columns else set()),
                                   need.pids))
    cols["inode"] = inodes
    if need.wants("process"):
        comm: dict[int, str | None] = {}
        for pid in cols["pid"]:
            if pid is not None and pid not in comm:
                text = procfs.read_text(f"/proc/{pid}/comm")
                comm[pid] = text.rstrip("\n") if text else None
        cols["process"] = [comm.get(p) if p is not None else None for p in cols["pid"]]
    attach_names(coll, cols, need)
    attach_first_seen(coll, cols, need)
    cols.pop("owners", None)
    cols.pop("fd", None)
    return need.keep_pids(cols)


TABLE = Table(
    name="flows",
    description="Traffic per connection: TCP connections with the kernel's byte, segment "
    "and retransmission counters (what `ss -ti` shows), plus UDP and ICMP flows counted "
    "from the wire while live capture runs. DNS over UDP (to or from port 53, or the "
    "--dns-port ports) is never a flow here: dns_queries holds it.",
    columns=(
        Column("pid", "INTEGER", "Process holding the socket; NULL when unknown"),
        Column("process", "VARCHAR", "Name of that process"),
        Column("protocol", "VARCHAR", "'tcp', 'udp' or 'icmp'"),
        Column("family", "VARCHAR", "'ipv4' or 'ipv6'"),
        Column("local_address", "VARCHAR", "Local address"),
        Column("local_port", "INTEGER", "Local port (NULL for ICMP)"),
        Column("remote_address", "VARCHAR", "Remote address"),
        Column("remote_port", "INTEGER", "Remote port (NULL for ICMP)"),
        Column("remote_host", "VARCHAR", "Name from captured DNS answers for remote_address "
               "in the flow's own network namespace (as sockets.remote_host)"),
        Column("state", "VARCHAR", "TCP state; NULL for captured flows"),
        Column("first_seen", "TIMESTAMP", "When the connection was first seen (UTC), by a "
               "recording `netsql serve --record` this statement runs in; NULL otherwise "
               "(docs/history.md)"),
        Column("bytes_sent", "UBIGINT", "TCP: bytes sent, retransmissions included "
               "(tcpi_bytes_sent); captured: IP bytes sent"),
        Column("bytes_acked", "UBIGINT", "TCP: bytes the peer acknowledged"),
        Column("bytes_received", "UBIGINT", "TCP: bytes received (tcpi_bytes_received); "
               "captured: IP bytes received"),
        Column("bytes_retrans", "UBIGINT", "TCP: bytes retransmitted"),
        Column("segs_out", "BIGINT", "TCP: segments sent"),
        Column("segs_in", "BIGINT", "TCP: segments received"),
        Column("retransmits", "BIGINT", "TCP: retransmitted segments over the connection's "
               "life (tcpi_total_retrans)"),
        Column("rtt", "DOUBLE", "TCP: smoothed round-trip time in milliseconds (as ss -i "
               "shows it)"),
        Column("last_send", "DOUBLE", "TCP: seconds since data was last sent"),
        Column("last_receive", "DOUBLE", "Seconds since data was last received (TCP) or a "
               "packet was last seen (captured)"),
        Column("packets_out", "BIGINT", "Captured: packets sent"),
        Column("packets_in", "BIGINT", "Captured: packets received"),
        Column("uid", "INTEGER", "User id owning the socket"),
        Column("inode", "BIGINT", "Socket inode (join with sockets.inode)"),
        Column("net_namespace", "BIGINT", "Inode of the network namespace: the socket's "
               "(TCP), or the one the packets were seen in (captured)"),
        Column("source", "VARCHAR", "'tcp_info' (kernel counters) or 'capture' (counted "
               "from the wire)"),
    ),
    collect=collect,
    examples=(
        "SELECT pid, process, remote_address, remote_port, bytes_sent, bytes_received "
        "FROM flows ORDER BY bytes_sent DESC LIMIT 10",
        "SELECT process, sum(bytes_sent) AS sent, sum(bytes_received) AS received "
        "FROM flows GROUP BY process ORDER BY sent DESC",
        "SELECT remote_address, remote_port, retransmits, rtt FROM flows "
        "WHERE protocol = 'tcp' AND retransmits > 0",
    ),
    notes="TCP rows come from sock_diag with TCP_INFO (every namespace, as `sockets`); "
    "counters are the kernel's since the connection opened. UDP/ICMP rows need live "
    "capture (--capture SECONDS or the shell), which counts them in every network "
    "namespace (or those of --netns), and count only what was seen while it ran. "
    "Linux only: elsewhere a statement that reads flows fails with a one-line error.",
)
