"""DNS transactions: queries matched with their responses, in a bounded buffer.

Pure bookkeeping, fed by the live capture: ``add`` takes one decoded DNS message with
its addresses; the tracker pairs queries and responses by the one rule in pairing.py
(the rule the capture-file scans follow too), keeps the newest ``capacity`` records
(oldest evicted first, counted) and a map from answered addresses to the name that
was asked for (for ``sockets.remote_host``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from netsql.capture.dnswire import DnsMessage, class_name, qtype_name, rcode_name
from netsql.capture.pairing import ANSWERS, DUPLICATE, JOINED, NEW, Pairing

ADDRESS_TYPES = (1, 28)  # A, AAAA
#: An answered address keeps its name for at least this long, even with TTL 0:
#: applications connect right after resolving, and local resolvers often answer TTL 0.
MIN_NAME_SECONDS = 10.0


@dataclass(slots=True)
class DnsRecord:
    ts: float
    client_address: str
    client_port: int
    server_address: str
    server_port: int
    transport: str
    trans_id: int
    query: str
    qtype: str
    qclass: str
    interface: str | None
    source: str
    status: str = "unanswered"  # 'answered' | 'unanswered' | 'response_only'
    rcode: str | None = None
    flags: list[str] = field(default_factory=list)
    answers: list[str] | None = None  # None until a response is seen (as in files)
    answer_types: list[str] | None = None
    ttls: list[int] | None = None
    rtt: float | None = None
    pid: int | None = None
    process: str | None = None
    uid: int | None = None
    forwarder: bool | None = None
    #: Inode of the network namespace the packet was seen in (sockets.net_namespace's
    #: value); None for records read from capture files.
    net_namespace: int | None = None


def _flags(msg: DnsMessage) -> list[str]:
    return [n for n, on in (("AA", msg.AA), ("TC", msg.TC), ("RD", msg.RD), ("RA", msg.RA))
            if on]


class DnsTracker:
    def __init__(self, capacity: int = 100_000, max_pending: int = 65_536,
                 max_names: int = 200_000) -> None:
        self.capacity = capacity
        self.records: deque[DnsRecord] = deque(maxlen=capacity)
        #: Open transactions by key (pairing.py), at most ``max_pending`` of them.
        self.pairing = Pairing(max_pending)
        #: (namespace, answered address) -> (name asked for, expiry, time seen).
        self.names: OrderedDict[tuple[int | None, str], tuple[str, float, float]] = (
            OrderedDict())
        self.max_names = max_names
        self.lock = threading.Lock()
        self.messages = 0  # DNS messages taken
        self.queries = 0
        self.responses = 0
        self.evicted = 0  # records pushed out of the buffer
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        #: Per network namespace: [messages, queries, responses, duplicates, evicted].
        self.by_netns: dict[int | None, list[int]] = {}

    @property
    def duplicates(self) -> int:
        """Copies and retransmissions folded into a transaction."""
        return self.pairing.duplicates

    def add(self, ts: float, src: str, sport: int, dst: str, dport: int, transport: str,
            msg: DnsMessage, interface: str | None, source: str,
            netns: int | None = None) -> DnsRecord | None:
        """Take one message (seen in network namespace ``netns``); returns the record a
        query belongs to when it is the first copy of that query seen (None otherwise).
        Two namespaces may use the same addresses: their transactions never pair."""
        with self.lock:
            self.messages += 1
            counts = self.by_netns.get(netns)
            if counts is None:
                counts = self.by_netns[netns] = [0, 0, 0, 0, 0]
            counts[0] += 1
            if self.first_ts is None:
                self.first_ts = ts
            self.last_ts = ts
            self.pairing.expire(ts)
            if msg.is_response:
                self.responses += 1
                counts[2] += 1
                self._response(ts, src, sport, dst, dport, transport, msg, interface, source,
                               netns)
                return None
            self.queries += 1
            counts[1] += 1
            key = (transport, src, sport, dst, dport, msg.trans_id, netns)
            verdict, rec = self.pairing.query(key, ts)
            if verdict == JOINED:  # its response came first: the row has it already
                rec.status = "answered"
                rec.rtt = 0.0
                return rec
            if verdict == DUPLICATE:
                counts[3] += 1
                return None
            rec = DnsRecord(ts, src, sport, dst, dport, transport, msg.trans_id, msg.qname,
                            qtype_name(msg.qtype), class_name(msg.qclass), interface, source,
                            flags=_flags(msg), net_namespace=netns)
            self._append(rec)
            self.pairing.opened(key, ts, rec, True)
            return rec

    def _response(self, ts: float, src: str, sport: int, dst: str, dport: int,
                  transport: str, msg: DnsMessage, interface: str | None,
                  source: str, netns: int | None) -> None:
        key = (transport, dst, dport, src, sport, msg.trans_id, netns)
        verdict, rec = self.pairing.response(key, ts)
        if verdict == DUPLICATE:
            self.by_netns[netns][3] += 1
            return
        if verdict == ANSWERS:
            rec.status = "answered"
            rec.rtt = max(ts - rec.ts, 0.0)
        else:
            assert verdict == NEW
            rec = DnsRecord(ts, dst, dport, src, sport, transport, msg.trans_id, msg.qname,
                            qtype_name(msg.qtype), class_name(msg.qclass), interface, source,
                            status="response_only", net_namespace=netns)
            self._append(rec)
            self.pairing.opened(key, ts, rec, False)
        rec.rcode = rcode_name(msg.rcode)
        rec.flags = _flags(msg)
        rec.answers = [a[3] for a in msg.answers]
        rec.answer_types = [qtype_name(a[1]) for a in msg.answers]
        rec.ttls = [a[2] for a in msg.answers]
        for _, rtype, ttl, text in msg.answers:
            if rtype in ADDRESS_TYPES:
                self.names[(netns, text)] = (rec.query, ts + max(ttl, MIN_NAME_SECONDS), ts)
                self.names.move_to_end((netns, text))
        while len(self.names) > self.max_names:
            self.names.popitem(last=False)

    def _append(self, rec: DnsRecord) -> None:
        if len(self.records) == self.capacity:
            self.evicted += 1
            counts = self.by_netns.get(self.records[0].net_namespace)
            if counts is not None:
                counts[4] += 1
        self.records.append(rec)

    def snapshot(self) -> list[DnsRecord]:
        with self.lock:
            return list(self.records)

    def name_for(self, address: str, net_namespace: int | None,
                 now: float | None) -> str | None:
        """The name last looked up in network namespace ``net_namespace`` that answered
        ``address`` there (within its TTL of ``now``). Another namespace's answer never
        counts: two namespaces may use one address for different hosts."""
        hit = self.names.get((net_namespace, address))
        if hit is None:
            return None
        name, expires, _ = hit
        if now is not None and now > expires:
            return None
        return name
