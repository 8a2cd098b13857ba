"""dns_queries from a capture file, fast: header fields for every packet, full DNS
decoding only for the columns a statement reads.

Counting or grouping 200,000 packets by client should not pay for decoding every
answer: UDP over Ethernet/VLAN/SLL/SLL2/raw IP is parsed inline here and matched on
raw address bytes; names are decoded only when ``query``/``qtype``/``qclass`` are
wanted, answers only when ``rcode``/``flags``/``answers``/... are. TCP (reassembly)
and unusual link layers go through the general decoder (packets.py).

Classic pcap files go through ``_cscan`` (a small C extension built with the package
when a compiler is there). ``step_threads`` (what PcapSource uses) parses each buffer's
records on up to ``threads`` threads with the GIL released, then pairs the messages in
file order on a C table and keeps the transactions in C until ``columns()`` builds the
wanted ones; ``step`` walks record by record into this module's state (``pairing.table``,
``rows``). Both call back into this module for what they do not decode (``_decode``,
``_general_messages``, ``_message``, ``_general``) and pair messages by the rule in
pairing.py (which the live tracker follows too), so every path agrees row for row
(tests/test_fastscan.py and tests/test_dns_policy.py compare them).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from netsql.capture.dnswire import class_name, decode_dns, qtype_name, rcode_name
from netsql.capture.packets import TcpDnsReassembler, decode_frame
from netsql.capture.pairing import ANSWERS, DUPLICATE, JOINED, Pairing
from netsql.capture.pcapfile import Buffer
from netsql.schema import Columns

_cscan: ModuleType | None
try:
    from netsql.capture import _cscan
except ImportError:  # built without a C compiler: the pure-Python scan
    _cscan = None

COMPILED = _cscan is not None

_HH = struct.Struct(">HH")
_VLAN = (0x8100, 0x88A8, 0x9100, 0x9200)
Q_COLS = frozenset({"query", "qtype", "qclass"})
R_COLS = frozenset({"answers", "answer_types", "ttls"})
COLUMNS = ("ts", "client_address", "client_port", "server_address", "server_port",
           "transport", "trans_id", "query", "qtype", "qclass", "rcode", "flags", "answers",
           "answer_types", "ttls", "rtt", "interface", "status")
FLAG_BITS = (("AA", 0x0400), ("TC", 0x0200), ("RD", 0x0100), ("RA", 0x0080))


def _flags(bits: int) -> list[str]:
    return [n for n, b in FLAG_BITS if bits & b]


_CODED: dict[str, Callable[[int], Any]] = {  # row values kept as numbers until read
    "qtype": qtype_name, "qclass": class_name, "rcode": rcode_name,
    "flags": _flags}


def _named(values: Iterable[Any], name: Callable[[int], Any]) -> list[Any]:
    """``values`` through ``name``, once per distinct number."""
    known: dict[int, Any] = {}
    out = []
    for v in values:
        if v is not None:
            t = known.get(v)
            if t is None:
                t = known[v] = name(v)
            v = t
        out.append(v)
    return out


def coded(name: str, values: list[Any]) -> list[Any]:
    """A column as read: codes kept as numbers (qtype, qclass, rcode, flags) named."""
    return _named(values, _CODED[name]) if name in _CODED else values


_MALFORMED: Any = object()
_GENERAL: Any = object()
_LINK_HEADER = {113: 16, 276: 20}


def _link(lt: int, frame: bytes) -> tuple[int, int] | None:
    """(ethertype, network header offset) for the link types scanned inline; None to
    skip the frame (loopback's outgoing copy), _MALFORMED when it is too short,
    _GENERAL when the general decoder must look at it."""
    n = len(frame)
    if lt == 1:
        if n < 14:
            return _MALFORMED
        et, off = frame[12] << 8 | frame[13], 14
        while et in _VLAN:
            if n < off + 4:
                return _MALFORMED
            et, off = frame[off + 2] << 8 | frame[off + 3], off + 4
        return et, off
    if lt == 113 or lt == 276:
        if n < _LINK_HEADER[lt]:
            return _MALFORMED
        if lt == 113:
            ptype, hatype, et = frame[0] << 8 | frame[1], frame[2] << 8 | frame[3], \
                frame[14] << 8 | frame[15]
        else:
            et, hatype, ptype = frame[0] << 8 | frame[1], frame[8] << 8 | frame[9], frame[10]
        if ptype == 4 and hatype == 772:
            return None  # loopback's outgoing copy; its incoming twin follows
        return et, _LINK_HEADER[lt]
    if lt == 101 or lt == 228 or lt == 229 or lt == 12 or lt == 14:
        if n < 1:
            return _MALFORMED
        return (0x0800 if frame[0] >> 4 == 4 else 0x86DD), 0
    return _GENERAL


#: The least a range of records given to a thread of its own may hold: below it, one
#: thread parses a buffer (a short file gains nothing from a thread). Not tuned: on the
#: shared 2-core test machine, busy with other work, the second thread's gain on a
#: 21 MB file was within the noise (the serial pairing and page faults dominate).
MIN_RANGE = 256 << 10


class Scan:
    """Accumulates transactions from records; ``columns()`` when done.

    ``threads``: how many threads ``step_threads`` may parse a buffer's records on."""

    def __init__(self, ports: Iterable[int], want: frozenset[str] | None,
                 threads: int = 1) -> None:
        self.ports = frozenset(ports)
        self.threads = max(1, threads)
        self.min_range = MIN_RANGE
        self._pairs: Any = None  # step_threads' transactions (in _cscan), when it ran
        self.ranges = 0  # the most ranges step_threads parsed one buffer in
        self.need_q = want is None or bool(want & Q_COLS)
        self.need_r = want is None or bool(want & R_COLS)
        self.rows: list[list[Any]] = []  # one list per transaction, in COLUMNS order
        self.pairing = Pairing()  # a file keeps every transaction: no max_open
        self.addr: dict[bytes, str] = {}
        self.names: dict[str, tuple[str, float]] = {}  # address -> (name, ts)
        self.reasm = TcpDnsReassembler()
        self.messages = self.queries = self.responses = self.malformed = 0
        self.first_ts: float | None = None
        bitmap = bytearray(8192)
        for p in self.ports:
            bitmap[p >> 3] |= 1 << (p & 7)
        self._portmap = bytes(bitmap)

    def _text(self, raw: bytes) -> str:
        t = self.addr.get(raw)
        if t is None:
            t = self.addr[raw] = socket.inet_ntop(
                socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
        return t

    def feed(self, records: Iterable[tuple[float, int, bytes, str | None]]) -> None:
        """Feed ``(ts, linktype, frame, ifname)`` records (the pure-Python path; the
        compiled scanner in _cscan.c does the same for whole pcap buffers)."""
        ports, unpack = self.ports, _HH.unpack_from
        for ts, lt, frame, ifname in records:
            if self.first_ts is None:
                self.first_ts = ts
            link = _link(lt, frame)
            if link is None:
                continue
            if link is _MALFORMED:
                self.malformed += 1
                continue
            if link is _GENERAL:
                self._general(ts, lt, frame, ifname)
                continue
            et, off = link
            n = len(frame)
            if et == 0x0800:
                if n < off + 20 or frame[off] & 15 < 5:
                    self.malformed += 1
                    continue
                proto = frame[off + 9]
                if proto != 17 or frame[off + 6] & 0x1F or frame[off + 7]:
                    if proto == 6:
                        self._general(ts, lt, frame, ifname)
                    continue
                src, dst = frame[off + 12:off + 16], frame[off + 16:off + 20]
                u = off + (frame[off] & 15) * 4
            elif et == 0x86DD:
                if n < off + 40:
                    self.malformed += 1
                    continue
                if frame[off + 6] != 17:
                    if frame[off + 6] in (6, 0, 43, 44, 60):
                        self._general(ts, lt, frame, ifname)
                    continue
                src, dst = frame[off + 8:off + 24], frame[off + 24:off + 40]
                u = off + 40
            else:
                continue
            if n < u + 8:
                self.malformed += 1
                continue
            sport, dport = unpack(frame, u)
            if sport not in ports and dport not in ports:
                continue
            end = min(u + (frame[u + 4] << 8 | frame[u + 5]), n)
            if end - u < 20:
                self.malformed += 1
                continue
            self._message(ts, src, sport, dst, dport, "udp", frame[u + 8:end], ifname)

    def step(self, buf: Buffer, pos: int, big_endian: bool, divisor: int, extra: int,
             linktype: int) -> tuple[int, int, int]:
        """Scan the complete classic-pcap records of ``buf`` from ``pos`` with the
        compiled scanner: (position after them, records, length of a record too long
        to be real or 0). CaptureReader.feed_pcap drives it."""
        assert _cscan is not None and self._pairs is None
        return _cscan.scan_pcap(self, buf, pos, big_endian, divisor, extra, linktype,
                                self._portmap, self.need_q | self.need_r << 1)

    def step_threads(self, buf: Buffer, pos: int, big_endian: bool, divisor: int,
                     extra: int, linktype: int) -> tuple[int, int, int]:
        """``step``, its records parsed on up to ``threads`` threads (ranges of at least
        ``min_range`` bytes) and paired in C, in file order; the transactions stay in
        _cscan until ``columns()``. A scan uses this or the others, not both."""
        assert _cscan is not None and not self.rows
        if self._pairs is None:
            self._pairs = _cscan.pairs_new(self.need_q | self.need_r << 1)
        return _cscan.scan_pcap_threads(self, self._pairs, buf, pos, big_endian, divisor,
                                        extra, linktype, self._portmap, self.threads,
                                        self.min_range)

    def _general_messages(self, ts: float, frame: bytes, lt: int, ifname: str | None
                          ) -> list[tuple[bytes, int, bytes, int, bool, bytes]]:
        """The DNS messages of a frame the general decoder reads: (source address,
        port, destination address, port, TCP?, message)."""
        info = decode_frame(lt, frame)
        if info is None:
            return []
        src, dst, sport, dport, transport, payload, flags, seq = info
        if sport not in self.ports and dport not in self.ports:
            return []
        s_raw = socket.inet_pton(socket.AF_INET6 if ":" in src else socket.AF_INET, src)
        d_raw = socket.inet_pton(socket.AF_INET6 if ":" in dst else socket.AF_INET, dst)
        if transport == "tcp":
            return [(s_raw, sport, d_raw, dport, True, bytes(msg))
                    for msg in self.reasm.feed(src, dst, sport, dport, payload, flags, seq)]
        if len(payload) >= 12:
            return [(s_raw, sport, d_raw, dport, False, bytes(payload))]
        return []

    def _general(self, ts: float, lt: int, frame: bytes, ifname: str | None) -> None:
        for s_raw, sport, d_raw, dport, tcp, msg in self._general_messages(ts, frame, lt,
                                                                            ifname):
            self._message(ts, s_raw, sport, d_raw, dport, "tcp" if tcp else "udp", msg,
                          ifname)

    @staticmethod
    def _decode(dns: bytes) -> tuple[Any, ...] | None:
        """What step_threads' rows need of a message it leaves to dnswire: (question,
        type, class, answers' data, their type names, their ttls), or None."""
        msg = decode_dns(dns)
        if msg is None:
            return None
        answers = msg.answers
        return (msg.qname, msg.qtype, msg.qclass, [a[3] for a in answers],
                [qtype_name(a[1]) for a in answers], [a[2] for a in answers])

    def _message(self, ts: float, src: bytes, sport: int, dst: bytes, dport: int,
                 transport: str, dns: bytes, ifname: str | None) -> None:
        if len(dns) < 12:
            self.malformed += 1
            return
        tid, bits = _HH.unpack_from(dns, 0)
        self.messages += 1
        if not bits & 0x8000:
            self.queries += 1
            key = (transport, src, sport, dst, dport, tid)
            verdict, found = self.pairing.query(key, ts)
            if verdict == JOINED:  # its response came first: the row has it already
                found[17] = "answered"
                found[15] = 0.0
                return
            if verdict == DUPLICATE:
                return
            q: str | None = None
            qt: int | None = None
            qc: int | None = None
            if self.need_q:
                msg = decode_dns(dns)
                if msg is None:
                    self.malformed += 1
                    return
                q, qt, qc = msg.qname, msg.qtype, msg.qclass
            new = [ts, src, sport, dst, dport, transport, tid, q, qt, qc, None, bits,
                   None, None, None, None, ifname, "unanswered"]
            self.rows.append(new)
            self.pairing.opened(key, ts, new, True)
            return
        self.responses += 1
        key = (transport, dst, dport, src, sport, tid)
        verdict, found = self.pairing.response(key, ts)
        if verdict == DUPLICATE:
            return
        msg = None
        row: list[Any]
        if verdict == ANSWERS:
            row = found
            row[17] = "answered"
            row[15] = max(ts - row[0], 0.0)
            if self.need_r:
                msg = decode_dns(dns)
        else:
            if self.need_q or self.need_r:
                msg = decode_dns(dns)
            row = [ts, dst, dport, src, sport, transport, tid,
                   msg.qname if msg else None, msg.qtype if msg else None,
                   msg.qclass if msg else None, None, None, None, None, None,
                   None, ifname, "response_only"]
            self.rows.append(row)
            self.pairing.opened(key, ts, row, False)
        row[10] = bits & 0xF  # rcode and flags: the response's header
        row[11] = bits
        if self.need_r:
            if msg is None:
                self.malformed += 1
                return
            answers = msg.answers
            row[12] = [a[3] for a in answers]
            row[13] = [qtype_name(a[1]) for a in answers]
            row[14] = [a[2] for a in answers]
            for a in answers:
                if a[1] in (1, 28):
                    self.names[a[3]] = (row[7], ts)

    def columns(self, want: frozenset[str] | None) -> Columns:
        """The wanted columns (all when None), addresses as text."""
        out: Columns = {}
        rows = self.rows
        wanted = [i for i, name in enumerate(COLUMNS)
                  if want is None or name in want or name == "ts"]
        if self._pairs is not None:
            assert _cscan is not None
            built = _cscan.pairs_columns(self._pairs, tuple(wanted))
            for i, values in zip(wanted, built, strict=True):
                name = COLUMNS[i]
                out[name] = _named(values, _CODED[name]) if name in _CODED else values
            return out
        for i in wanted:
            name = COLUMNS[i]
            if name in ("client_address", "server_address"):
                text = self._text
                out[name] = [text(r[i]) for r in rows]
            elif name in _CODED:  # kept as numbers until asked for
                out[name] = _named((r[i] for r in rows), _CODED[name])
            else:
                out[name] = [r[i] for r in rows]
        return out

    def __len__(self) -> int:
        if self._pairs is not None:
            assert _cscan is not None
            return int(_cscan.pairs_len(self._pairs))
        return len(self.rows)
