"""Live DNS decoding: captured packets -> the capture-file decoder -> the tracker.

Live capture decodes with the code that reads capture files: fastscan.Scan (the
tracker's ``LiveScan``) and, when the package was built with a compiler, _cscan.c, whose
``live_ring`` walks a socket's TPACKET_V3 ring (live.Ring) with the ``parse_frame`` and
the pairing verdicts that walk a pcap file's records, into the tracker's compiled
store (``live_packet``: one packet, the same way). So files and live capture share one
decoder and one pairing rule (pairing.py). Without the compiled module, LiveCapture
reads packet by packet and ``packet`` feeds each to the pure-Python Scan and tracker;
both give the same rows (tests/test_livescan.py feeds the same packets through both).

After each batch (a ring's ready blocks, or one packet) the batch's marks are looked
at: a query this host sent goes to ``early`` (the socket lookup, with its 4-tuple) and
its record to ``submit`` (attribution), once; a response's answers name their addresses
(sockets.remote_host). A mark is looked up after its batch: a query this host sent
whose own copy could not be decoded, but whose copy on another interface (a bridge) in
the same batch could, is still attributed on the ring path, where the packet path (a
batch of one) cannot; a row the bounded buffer already evicted is not looked at.
Measured (benchmarks/bench_live.py, 100,000 queries/s): 25.6 us of CPU a packet when
each packet was read with recvmsg and decoded in Python; 1.9 us in the capture thread
with the ring walked in C but a row of Python objects per transaction; _cscan.c's
live store says what it costs now.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from netsql.capture.live import Ring
from netsql.capture.liverows import DnsRecord, address_text
from netsql.capture.tracker import DnsTracker

_cscan: ModuleType | None
try:
    from netsql.capture import _cscan
except ImportError:  # built without a C compiler: packet by packet, in Python
    _cscan = None

#: The compiled ring reader is there (LiveCapture is then given ``on_ring``).
COMPILED = _cscan is not None and hasattr(_cscan, "live_ring")
RAW_IP = 101  # what a cooked socket gives: the packet from its IP header
#: Blocks a live_ring call walks at most (32 KiB blocks of about 180 packets each: a
#: few milliseconds).
BLOCKS = 16


def portmap(ports: Iterable[int]) -> bytes:
    """The 65,536-bit map of ``ports`` that the compiled decoder takes."""
    bitmap = bytearray(8192)
    for p in ports:
        bitmap[p >> 3] |= 1 << (p & 7)
    return bytes(bitmap)


class LiveDecoder:
    """Packets (one at a time, or a ring's blocks) of network namespace ``ns`` ->
    tracker rows, then the marks. One decoder per namespace, each with the tracker's
    scan of its namespace (its own pairing table: live transactions pair only within
    one namespace); the tracker's ``feeding`` lock keeps one batch at a time."""

    def __init__(self, tracker: DnsTracker, ns: int | None = None) -> None:
        self.tracker = tracker
        self.ns = ns
        self._portmap = portmap(tracker.scan.ports)
        #: Called with (namespace, transport, client, client port, server, server port)
        #: for each query the namespace sent, right after its batch was decoded (live
        #: attribution).
        self.early: Callable[[int | None, str, str, int, str, int], None] | None = None
        #: Called with the record of each query this host sent (its first copy).
        self.submit: Callable[[DnsRecord], None] | None = None
        self.errors = 0  # packets a callback failed on (skipped)

    @property
    def malformed(self) -> int:
        return self.tracker.counts(self.ns)["malformed"]

    def packet(self, ts: float, packet: bytes, interface: str | None, local: bool) -> None:
        """One IP packet as a cooked socket reads it (LiveCapture's packet loop)."""
        tracker, ns = self.tracker, self.ns
        with tracker.feeding:
            scan = tracker.scan_for(ns)
            if tracker.live is not None:
                assert _cscan is not None
                _cscan.live_packet(tracker.live, ns, scan, ts, packet, interface, local,
                                   self._portmap, scan.marks)
            else:
                scan.local = local
                scan.feed(((ts, RAW_IP, packet, interface),))
            self._settle(tracker.take(ns))

    def ring(self, ring: Ring) -> int:
        """Decode the blocks ``ring`` has ready (compiled); the packets taken. The GIL
        is held while a call walks its blocks: at most ``BLOCKS`` a call, so that the
        other threads (attribution, the shell) wait a few milliseconds at most."""
        assert _cscan is not None and self.tracker.live is not None
        tracker, ns = self.tracker, self.ns
        total = walked = full_ones = 0
        while True:
            with tracker.feeding:
                scan = tracker.scan_for(ns)
                ring.block, packets, errors, _, blocks, full = _cscan.live_ring(
                    tracker.live, ns, scan, ring.map, ring.block, ring.nblocks,
                    ring.block_size, self._portmap, ring.ifname, ring.ifnames, scan.marks,
                    BLOCKS)
                walked += blocks
                full_ones += full
                self.errors += errors
                if packets:
                    self._settle(tracker.take(ns))
                    total += packets
            if blocks < BLOCKS:
                ring.busy = walked > 0 and 2 * full_ones >= walked
                return total

    def _settle(self, marks: list[tuple[Any, ...]]) -> None:
        if not marks:
            return
        tracker, ns = self.tracker, self.ns
        early, submit = self.early, self.submit
        for transport, src, sport, dst, dport, tid, response in marks:
            if response:
                row = tracker.find(ns, transport, dst, dport, src, sport, tid)
                if row is not None:
                    tracker.answered(row)
                continue
            if early is not None:
                early(ns, transport, address_text(src), sport, address_text(dst), dport)
            row = tracker.find(ns, transport, src, sport, dst, dport, tid)
            if row is not None:
                rec, new = tracker.record(row)
                if new and submit is not None:
                    submit(rec)
