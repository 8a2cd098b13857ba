"""The native sockets reader: sock_diag netlink (else /proc/net text) in every network
namespace, owners from one scan of /proc/*/fd."""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

from netsql import procfs, sockdiag
from netsql.backends.base import TCP_STATE_NAMES
from netsql.collect import Collection, Need
from netsql.schema import Columns

TCP_STATES = {f"{i + 1:02X}": name for i, name in enumerate(TCP_STATE_NAMES)}

FILES = (("tcp", "ipv4", "tcp"), ("tcp6", "ipv6", "tcp"), ("udp", "ipv4", "udp"),
         ("udp6", "ipv6", "udp"))

OWNER_COLUMNS = ("pid", "fd", "owners")


def hex_ipv4(hexaddr: str, cache: dict[str, str]) -> str:
    addr = cache.get(hexaddr)
    if addr is None:
        addr = socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(hexaddr, 16)))
        cache[hexaddr] = addr
    return addr


def hex_ipv6(hexaddr: str, cache: dict[str, str]) -> str:
    addr = cache.get(hexaddr)
    if addr is None:
        words = struct.unpack("<4I", bytes.fromhex(hexaddr))
        addr = socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words))
        cache[hexaddr] = addr
    return addr


_COLUMNS = sockdiag.COLUMNS
_STATE_NAMES = {int(k, 16): v for k, v in TCP_STATES.items()}
#: sock_diag state number (0-255) -> the state column's text, for TCP and for UDP
#: ('ESTABLISHED' when connected, else NULL).
TCP_STATE_TEXT = [_STATE_NAMES.get(i) or str(i) for i in range(256)]
_UDP_STATE_TEXT: list[str | None] = [None] * 256
_UDP_STATE_TEXT[1] = "ESTABLISHED"


#: A namespace whose last TCP dump held this many sockets may have the next one cut in
#: two at its median local port, the halves dumped at once on two netlink sockets
#: (threads): the kernel fills each socket's message inside recv, on the calling
#: thread, so one dump uses one core. Measured with 40,000 sockets on 2 cores: 49 ms one
#: dump, 31 ms two halves at once; but 58-60 ms against 43-45 while another process kept
#: one of the cores busy (each half walks the whole hash table: 10-13 ms of CPU more).
#: So both ways are timed, and the faster one is taken (Pace).
SPLIT_FROM = 10_000
#: Namespace inode -> the local port its next TCP dump is cut at (from its last dump's
#: ports; only where the work is shared, never a value shown: each half is dumped
#: afresh, and the two port ranges hold every socket exactly once).
_CUTS: dict[int, int] = {}


class Pace:
    """How long a namespace's dump took last time whole and last time in halves: the
    next dump is the faster way, the other way again every RETRY-th dump (what pays
    changes with the other work the cores have)."""

    RETRY = 8

    def __init__(self) -> None:
        self.took: dict[bool, float] = {}  # in halves? -> seconds
        self.dumps = 0

    def halves(self) -> bool:
        """Whether the next dump is in halves (each way is timed once first)."""
        self.dumps += 1
        if len(self.took) < 2:
            return True not in self.took
        faster = self.took[True] <= self.took[False]
        return faster != (self.dumps % self.RETRY == 0)


#: Namespace inode -> its Pace (while it has a cut).
_PACES: dict[int, Pace] = {}


def read_sockets(coll: Collection) -> Columns:
    """Every TCP/UDP socket of every namespace: sock_diag netlink, else /proc/net text
    (pid, fd and owners not yet: see attach_owners).

    The namespaces are dumped at once, a thread each (and a busy one's TCP in two
    halves when that is faster: SPLIT_FROM): the kernel walks the host's whole TCP hash
    table for every namespace's dump (9-12 ms with 40,000 sockets, even for a namespace
    with none), and socket.recv_into lets other threads run meanwhile. Measured with
    40,000 sockets and 5 namespaces on 2 cores: 90 ms one after the other, ~55 ms at
    once."""

    def scan() -> Columns:
        own = procfs.own_netns()
        # When flows is collected in the same pass, one TCP dump serves both.
        tcp_info: dict[int, list[Any]] | None = {} if "flows" in coll.tables else None
        if tcp_info is not None:
            coll.once("tcp_info", lambda: tcp_info)
        spaces = list(procfs.namespaces(coll).items())
        # (namespace, handle, TCP's local ports or None: all, UDP too)
        jobs: list[tuple[int, str, sockdiag.Ports | None, bool]] = []
        halved: dict[int, bool] = {}  # namespaces with a cut -> dumped in halves?
        for ns, handle in spaces:
            cut = _CUTS.get(ns)
            if cut is not None:
                halved[ns] = _PACES.setdefault(ns, Pace()).halves()
            if cut is None or not halved[ns]:
                jobs.append((ns, handle, None, True))
            else:
                jobs += [(ns, handle, (0, cut - 1), True), (ns, handle, (cut, 0xFFFF), False)]
        parts: list[tuple[list[list[Any]], int] | BaseException | None] = [None] * len(jobs)
        spans: list[tuple[float, float]] = [(0.0, 0.0)] * len(jobs)

        def dump(i: int) -> None:
            ns, handle, ports, udp = jobs[i]
            start = time.perf_counter()
            try:
                parts[i] = _from_netlink(ns, None if ns == own else handle, tcp_info,
                                         ports, udp)
            except OSError as exc:
                # A handle whose process moved to another namespace: that namespace's
                # rows would be labelled this one's (its sockets come with its own
                # handle); anything else: read /proc/PID/net instead (below).
                parts[i] = ([[] for _ in sockdiag.COLUMNS], 0) if exc.errno == errno.ESTALE \
                    else None
            except BaseException as exc:  # handed to the collecting thread
                parts[i] = exc
            spans[i] = (start, time.perf_counter())

        threads = [threading.Thread(target=dump, args=(i,), daemon=True,
                                    name="netsql-sockdiag") for i in range(1, len(jobs))]
        for t in threads:
            t.start()
        if jobs:
            dump(0)
        for t in threads:
            t.join()
        for part in parts:
            if isinstance(part, BaseException):
                raise part
        for ns, halves in halved.items():  # how long its dump took, this way
            took = [span for (n, _, _, _), span in zip(jobs, spans, strict=True) if n == ns]
            _PACES[ns].took[halves] = max(e for _, e in took) - min(s for s, _ in took)
        cols: Columns = {k: [] for k in _COLUMNS}
        for ns, handle in spaces:
            mine = [p for (n, _, _, _), p in zip(jobs, parts, strict=True) if n == ns]
            if any(p is None for p in mine):  # (a half is not enough: all from /proc)
                base = procfs.proc_dir(handle)
                if base is not None:
                    _from_proc(cols, ns, base)
                continue
            tcp_ports: list[int] = []
            for part in mine:
                assert isinstance(part, tuple)
                values, ntcp = part
                tcp_ports += values[_COLUMNS.index("local_port")][:ntcp:64]
                for k, column in zip(sockdiag.COLUMNS, values, strict=True):
                    if cols[k]:
                        cols[k].extend(column)
                    else:
                        cols[k] = column
            _learn_cut(ns, tcp_ports)
        return cols

    return coll.once("sockets", scan)


def _learn_cut(ns: int, sample: list[int]) -> None:
    """Where namespace ``ns``'s next TCP dump is cut (SPLIT_FROM), from every 64th local
    port of its last one: at the median."""
    if len(sample) * 64 < SPLIT_FROM:
        _CUTS.pop(ns, None)
        _PACES.pop(ns, None)
        return
    sample.sort()
    _CUTS[ns] = max(1, sample[len(sample) // 2])


def _from_netlink(ns: int, nspath: str | None,
                  tcp_info: dict[int, list[Any]] | None = None,
                  ports: sockdiag.Ports | None = None, udp: bool = True
                  ) -> tuple[list[list[Any]], int]:
    """One namespace's sockets as the lists of sockdiag.COLUMNS, and how many of them
    are TCP (first): TCP's only those with a local port in ``ports`` when given, UDP's
    only when ``udp``. With ``tcp_info``, TCP comes with TCP_INFO and the raw records
    are kept there (namespace -> records) for the flows table."""
    sock = sockdiag.open_socket(nspath, expect=None if nspath is None else ns)
    cols: list[list[Any]] = [[] for _ in sockdiag.COLUMNS]
    try:
        # TCP of both families in one dump: each walks the host's whole TCP table.
        if tcp_info is not None:
            both = sockdiag.rows(sock, socket.AF_UNSPEC, 6, info=True, ports=ports)
            tcp_info.setdefault(ns, []).extend(both)
            sockdiag.append_columns(both, cols, TCP_STATE_TEXT, "tcp", ns)
        else:
            sockdiag.columns(sock, socket.AF_UNSPEC, 6, cols, TCP_STATE_TEXT, "tcp", ns,
                             ports)
        ntcp = len(cols[0])
        for family in (socket.AF_INET, socket.AF_INET6) if udp else ():
            sockdiag.columns(sock, family, 17, cols, _UDP_STATE_TEXT, "udp", ns)
    finally:
        sock.close()
    return cols, ntcp


def proc_net_entries(text: str) -> Iterator[tuple[list[str], str, str, str, str]]:
    """The entries of a /proc/net/{tcp,udp,raw,...}[6] file: (fields, local address
    and port, remote address and port, each still in the kernel's hex)."""
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        lhex, lport = f[1].split(":")
        rhex, rport = f[2].split(":")
        yield f, lhex, lport, rhex, rport


def _from_proc(cols: Columns, ns: int, base: str) -> None:
    """/proc/<pid>/net/{tcp,tcp6,udp,udp6} of one namespace (no netlink, no setns)."""
    cache: dict[str, str] = {}
    family_c, proto_c = cols["family"], cols["protocol"]
    laddr_c, lport_c = cols["local_address"], cols["local_port"]
    raddr_c, rport_c = cols["remote_address"], cols["remote_port"]
    state_c, txq_c, rxq_c = cols["state"], cols["tx_queue"], cols["rx_queue"]
    uid_c, inode_c, ns_c = cols["uid"], cols["inode"], cols["net_namespace"]
    for fname, family, proto in FILES:
        text = procfs.read_text(f"{base}/net/{fname}")
        if not text:
            continue
        conv = hex_ipv4 if family == "ipv4" else hex_ipv6
        tcp = proto == "tcp"
        for f, lhex, lport, rhex, rport in proc_net_entries(text):
            st = f[3]
            tx, rx = f[4].split(":")
            family_c.append(family)
            proto_c.append(proto)
            laddr_c.append(conv(lhex, cache))
            lport_c.append(int(lport, 16))
            if rport == "0000" and rhex.strip("0") == "":
                raddr_c.append(None)
                rport_c.append(None)
            else:
                raddr_c.append(conv(rhex, cache))
                rport_c.append(int(rport, 16))
            if tcp:
                state_c.append(TCP_STATES.get(st, st))
            else:
                state_c.append("ESTABLISHED" if st == "01" else None)
            txq_c.append(int(tx, 16))
            rxq_c.append(int(rx, 16))
            uid_c.append(int(f[7]))
            inode_c.append(int(f[9]))
            ns_c.append(ns)


def attach_owners(coll: Collection, cols: Columns, need: Need) -> None:
    """Fill pid/fd/owners from the /proc/*/fd scan (only when the statement uses them)."""
    n = len(cols["inode"])
    if not need.wants(*OWNER_COLUMNS):
        for name in OWNER_COLUMNS:
            cols[name] = [None] * n
        return
    owners = procfs.socket_owners(coll, need.pids, expect=cols["inode"])
    first, many = owners.first, owners.all_pids
    inodes = cols["inode"]
    hits = list(map(first.get, inodes))
    cols["pid"] = [h[0] if h else None for h in hits]
    cols["fd"] = [h[1] if h else None for h in hits] if need.wants("fd") else [None] * n
    cols["owners"] = ([many.get(i, [h[0]]) if h else None for i, h in zip(
        inodes, hits, strict=True)] if need.wants("owners") else [None] * n)
    orphans = sum(1 for i, h in zip(inodes, hits, strict=True) if h is None and i) \
        if owners.unreadable else 0
    if owners.unreadable and orphans and need.pids is None:
        coll.warn(
            f"{orphans} sockets have no pid: the fd tables of {owners.unreadable} processes "
            "are not readable by this user; run as root (sudo) to see their owners"
        )


def sockets(coll: Collection, need: Need) -> Columns:
    """The sockets table but remote_host, owners as ``need`` wants them."""
    cols = dict(read_sockets(coll))
    attach_owners(coll, cols, need)
    return cols
