"""The live tracker's rows as Python sees them (tracker.py keeps them).

``LiveScan``: the pure-Python decoder of live packets (fastscan.Scan with the marks
livescan.py looks at); ``DnsRecord``: one transaction as dns_queries shows it, a view of
its row, and ``LiveRecord`` the same for a row of the compiled store (_cscan.c
live_*), read again from it while the transaction may still change; ``StorePairing``:
what a pairing.Pairing tells of a namespace, for the compiled store.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from netsql.capture.dnswire import class_name, qtype_name, rcode_name
from netsql.capture.fastscan import COLUMNS, FLAG_BITS, Scan
from netsql.capture.pairing import Pairing

_cscan: ModuleType | None
try:
    from netsql.capture import _cscan
except ImportError:  # built without a C compiler: no LiveRecord is made
    _cscan = None

#: Index of a live row's network namespace (inode; after the COLUMNS).
NS = len(COLUMNS)


class LiveScan(Scan):
    """fastscan.Scan for live capture: every column wanted, and ``marks``, the messages
    livescan.py must look at after decoding (queries sent by this host, for attribution;
    responses, for the names of their addresses): (transport, src, sport, dst, dport,
    id, is_response); ``local``: the packet being decoded was sent by this host. The
    compiled store (_cscan.c live_*) keeps its counters here and marks messages itself."""

    def __init__(self, ports: Any, limit: int) -> None:
        super().__init__(ports, None)
        self.pairing = Pairing(limit)  # at most ``limit`` open transactions
        self.local = False  # the frame being decoded was sent by this host
        self.marks: list[tuple[Any, ...]] = []

    def _message(self, ts: float, src: bytes, sport: int, dst: bytes, dport: int,
                 transport: str, dns: bytes, ifname: str | None) -> None:
        super()._message(ts, src, sport, dst, dport, transport, dns, ifname)
        if len(dns) >= 12:
            response = bool(dns[2] & 0x80)
            if response or (self.local and dport in self.ports):
                self.marks.append((transport, src, sport, dst, dport,
                                   dns[0] << 8 | dns[1], response))


def address_text(raw: bytes, cache: dict[bytes, str] = {}) -> str:  # noqa: B006 (the cache)
    t = cache.get(raw)
    if t is None:
        import socket

        if len(cache) > 65536:
            cache.clear()
        t = cache[raw] = socket.inet_ntop(
            socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
    return t


def _coded(v: int | None, name: Any) -> str | None:
    return None if v is None else name(v)


class DnsRecord:
    """One transaction as dns_queries shows it: a view of its row (so it follows the
    row as the response arrives), and what attribution found."""

    __slots__ = ("kept", "pid", "process", "uid", "forwarder", "source")

    def __init__(self, row: list[Any], source: str = "live") -> None:
        self.kept = row
        self.source = source
        self.pid: int | None = None
        self.process: str | None = None
        self.uid: int | None = None
        self.forwarder: bool | None = None

    ts = property(lambda self: self.row[0])
    client_address = property(lambda self: address_text(self.row[1]))
    client_port = property(lambda self: self.row[2])
    server_address = property(lambda self: address_text(self.row[3]))
    server_port = property(lambda self: self.row[4])
    transport = property(lambda self: self.row[5])
    trans_id = property(lambda self: self.row[6])
    query = property(lambda self: self.row[7])
    qtype = property(lambda self: _coded(self.row[8], qtype_name))
    qclass = property(lambda self: _coded(self.row[9], class_name))
    rcode = property(lambda self: _coded(self.row[10], rcode_name))
    flags = property(lambda self: [n for n, b in FLAG_BITS if (self.row[11] or 0) & b])
    answers = property(lambda self: self.row[12])
    answer_types = property(lambda self: self.row[13])
    ttls = property(lambda self: self.row[14])
    rtt = property(lambda self: self.row[15])
    interface = property(lambda self: self.row[16])
    status = property(lambda self: self.row[17])
    #: Inode of the network namespace the packet was seen in (sockets.net_namespace's
    #: value); None for a row given none.
    net_namespace = property(lambda self: self.row[NS] if len(self.row) > NS else None)

    @property
    def row(self) -> list[Any]:
        return self.kept

    def __repr__(self) -> str:
        return (f"DnsRecord({self.ts}, {self.client_address}, {self.client_port}, "
                f"{self.query!r}, {self.status}, pid={self.pid})")


class LiveRecord(DnsRecord):
    """A record of a row of the compiled store: the row is read again from the store
    while its transaction may still change (until answered) and the store has it."""

    __slots__ = ("store", "seq")

    def __init__(self, row: list[Any], store: Any, seq: int) -> None:
        self.store = store
        self.seq = seq
        super().__init__(row)

    @property
    def row(self) -> list[Any]:
        if self.kept[17] != "answered" and _cscan is not None:
            fresh = _cscan.live_row(self.store, self.seq)
            if fresh is not None:
                self.kept = fresh
        return self.kept


class StorePairing:
    """What a namespace's pairing.Pairing tells, for the compiled store: counters and
    ``len(table)`` (its open transactions)."""

    def __init__(self, tracker: Any, ns: int | None) -> None:
        self.tracker, self.ns = tracker, ns

    @property
    def duplicates(self) -> int:
        return self.tracker.scan_for(self.ns).pairing.duplicates

    @property
    def forgotten(self) -> int:
        return self.tracker.scan_for(self.ns).pairing.forgotten

    @property
    def table(self) -> range:
        """As long as the open transactions (their keys stay in C)."""
        return range(self.tracker.stats(self.ns)[2])
