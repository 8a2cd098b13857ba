"""flows: traffic per connection, nettop/flowtop style.

TCP connections come with the kernel's own per-socket counters (sock_diag with
TCP_INFO, what `ss -ti` shows): no capture, no setup. UDP and ICMP flows appear while
live capture runs, counted from the wire per 5-tuple.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from netsql import procfs
from netsql.collect import Collection, Need
from netsql.schema import Column, Columns, Table
from netsql.tables.sockets import _STATE_NAMES, attach_names, attach_owners

INET_DIAG_INFO = 2
# TCP states that have a full socket with TCP_INFO (not LISTEN, TIME_WAIT, NEW_SYN_RECV).
_STATES = sum(1 << s for s in (1, 2, 3, 4, 5, 7, 8, 9, 11))
_LAST = struct.Struct("=IIII")  # last_data_sent, last_ack_sent, last_data_recv, last_ack_recv
NAMES = ("pid", "process", "protocol", "family", "local_address", "local_port",
         "remote_address", "remote_port", "state", "bytes_sent", "bytes_acked",
         "bytes_received", "bytes_retrans", "segs_out", "segs_in", "retransmits", "rtt",
         "last_send", "last_receive", "packets_out", "packets_in", "uid", "inode",
         "net_namespace", "source")


def tcp_rows(coll: Collection, cols: Columns) -> None:
    from netsql import sockdiag

    own = procfs.own_netns()
    cache: dict[bytes, str] = {}
    if coll.tables & {"sockets", "listening_ports"}:  # their dump carries TCP_INFO
        from netsql.tables.sockets import read_sockets

        read_sockets(coll)
        shared: dict[int, list[Any]] = coll.once("tcp_info", dict)
        for ns, records in shared.items():
            for family, fname in ((socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6")):
                _dump_tcp((d for d in records if d.family == family
                           and (1 << d.state) & _STATES), family, fname, ns, cols, cache)
        return
    for ns, base in procfs.namespaces(coll).items():
        try:
            sock = sockdiag.open_socket(None if ns == own else f"{base}/ns/net")
        except OSError:
            continue  # another namespace without CAP_SYS_ADMIN: not visible
        try:
            for family, fname in ((socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6")):
                _dump_tcp(sockdiag.dump(sock, family, socket.IPPROTO_TCP, states=_STATES,
                                        ext=1 << (INET_DIAG_INFO - 1)),
                          family, fname, ns, cols, cache)
        finally:
            sock.close()


_Q = struct.Struct("=Q")
_I = struct.Struct("=I")


def _dump_tcp(rows: Any, family: int, fname: str, ns: int, cols: Columns,
              cache: dict[bytes, str]) -> None:
    """Append one namespace's TCP sockets with their TCP_INFO counters to ``cols``."""
    ntop = socket.inet_ntop
    states = _STATE_NAMES
    q, i32 = _Q.unpack_from, _I.unpack_from
    c = cols
    pid_c, proc_c, proto_c, fam_c = c["pid"], c["process"], c["protocol"], c["family"]
    la_c, lp_c, ra_c, rp_c = (c["local_address"], c["local_port"], c["remote_address"],
                              c["remote_port"])
    st_c, bs_c, ba_c, br_c, bre_c = (c["state"], c["bytes_sent"], c["bytes_acked"],
                                     c["bytes_received"], c["bytes_retrans"])
    so_c, si_c, rt_c, rtt_c = c["segs_out"], c["segs_in"], c["retransmits"], c["rtt"]
    ls_c, lr_c, po_c, pi_c = c["last_send"], c["last_receive"], c["packets_out"], c["packets_in"]
    uid_c, ino_c, ns_c, src_c = c["uid"], c["inode"], c["net_namespace"], c["source"]
    for d in rows:
        info = d.info or b""
        n = len(info)
        src = cache.get(d.src)
        if src is None:
            src = cache[d.src] = ntop(family, d.src)
        dst = cache.get(d.dst)
        if dst is None:
            dst = cache[d.dst] = ntop(family, d.dst)
        pid_c.append(None)
        proc_c.append(None)
        proto_c.append("tcp")
        fam_c.append(fname)
        la_c.append(src)
        lp_c.append(d.sport)
        ra_c.append(dst)
        rp_c.append(d.dport)
        st_c.append(states.get(d.state, str(d.state)))
        bs_c.append(q(info, 200)[0] if n >= 208 else None)
        ba_c.append(q(info, 120)[0] if n >= 128 else None)
        br_c.append(q(info, 128)[0] if n >= 136 else None)
        bre_c.append(q(info, 208)[0] if n >= 216 else None)
        so_c.append(i32(info, 136)[0] if n >= 140 else None)
        si_c.append(i32(info, 140)[0] if n >= 144 else None)
        rt_c.append(i32(info, 100)[0] if n >= 104 else None)
        rtt_c.append(i32(info, 68)[0] / 1e6 if n >= 72 else None)
        if n >= 60:
            last = _LAST.unpack_from(info, 44)
            ls_c.append(last[0] / 1e3)
            lr_c.append(last[2] / 1e3)
        else:
            ls_c.append(None)
            lr_c.append(None)
        po_c.append(None)
        pi_c.append(None)
        uid_c.append(d.uid)
        ino_c.append(d.inode)
        ns_c.append(ns)
        src_c.append("tcp_info")


def captured_rows(coll: Collection, cols: Columns) -> None:
    capture = coll.state.get("capture")
    flowcap = getattr(capture, "flowcap", None)
    if flowcap is None:
        return
    now = time.time()
    ns = procfs.own_netns()
    # A captured UDP flow belongs to the socket bound to its local port, if any.
    from netsql.tables.sockets import read_sockets

    socks = read_sockets(coll)
    udp_inode: dict[tuple[str, int], tuple[int, int]] = {}
    for proto, addr, port, inode, uid, sns in zip(
            socks["protocol"], socks["local_address"], socks["local_port"], socks["inode"],
            socks["uid"], socks["net_namespace"], strict=True):
        if proto == "udp" and sns == ns:
            udp_inode.setdefault((addr, port), (inode, uid))
    for f in flowcap.snapshot():
        hit = None
        if f.protocol == "udp" and f.local_port is not None:
            hit = udp_inode.get((f.local_address, f.local_port)) or udp_inode.get(
                ("::" if f.family == "ipv6" else "0.0.0.0", f.local_port))
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


def collect(coll: Collection, need: Need) -> Columns:
    cols: Columns = {k: [] for k in NAMES}
    tcp_rows(coll, cols)
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
    cols.pop("owners", None)
    cols.pop("fd", None)
    if need.pids is not None:
        keep = [i for i, p in enumerate(cols["pid"]) if p in need.pids]
        cols = {k: [v[i] for i in keep] for k, v in cols.items()}
    return cols


TABLE = Table(
    name="flows",
    description="Traffic per connection: TCP connections with the kernel's byte, segment "
    "and retransmission counters (what `ss -ti` shows), plus UDP and ICMP flows counted "
    "from the wire while live capture runs.",
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
               "(as sockets.remote_host)"),
        Column("state", "VARCHAR", "TCP state; NULL for captured flows"),
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
        Column("rtt", "DOUBLE", "TCP: smoothed round-trip time in seconds"),
        Column("last_send", "DOUBLE", "TCP: seconds since data was last sent"),
        Column("last_receive", "DOUBLE", "Seconds since data was last received (TCP) or a "
               "packet was last seen (captured)"),
        Column("packets_out", "BIGINT", "Captured: packets sent"),
        Column("packets_in", "BIGINT", "Captured: packets received"),
        Column("uid", "INTEGER", "User id owning the socket"),
        Column("inode", "BIGINT", "Socket inode (join with sockets.inode)"),
        Column("net_namespace", "BIGINT", "Inode of the network namespace"),
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
    "capture (--capture SECONDS or the shell) and count only what was seen while it ran.",
)
