"""DNS capture sources behind the dns_queries table: live (with attribution) and files.

``DnsCapture`` is what the engine keeps in ``engine.state["capture"]`` (the shell's
``.capture`` and toolbar use ``status``/``start``/``stop``); ``PcapSource`` in
``engine.state["pcap"]`` reads capture files once per change of the files.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from netsql.capture.capstats import SUMMED, empty_status, ns_status
from netsql.capture.livescan import COMPILED, LiveDecoder
from netsql.capture.tracker import DnsRecord, DnsTracker


class DnsCapture:
    """Live DNS capture with process attribution, in every network namespace (or those
    of ``netns``: inodes, --netns); start/stop/status for the shell."""

    #: Read the sockets through TPACKET_V3 rings, decoded by the compiled scanner
    #: (livescan.py); False: packet by packet (each decoded by the compiled scanner too
    #: when it is built, else in Python).
    use_ring = COMPILED

    def __init__(self, interfaces: Sequence[str] | None = None, ports: Sequence[int] = (53,),
                 capacity: int = 100_000, hold: bool = False,
                 netns: Sequence[int] | None = None) -> None:
        self.interfaces = list(interfaces) if interfaces else None
        self.ports = list(ports)
        self.only = list(netns) if netns else None
        self.tracker = DnsTracker(capacity, ports=self.ports)
        #: One decoder per namespace (each with its own scan and pairing table in the
        #: tracker); ``decoder`` is the one of packets given no namespace (fed by hand).
        self.decoder = LiveDecoder(self.tracker)
        self.decoders: dict[int | None, LiveDecoder] = {None: self.decoder}
        self.nsset: Any = None  # nsset.CaptureSet: the per-namespace sockets and readers
        self.attrib: Any = None
        self.hold_wanted = hold  # --hold: NFQUEUE each namespace's DNS queries (opt-in)
        self.procs: Any = None  # kernel process events (procevents.ProcWatch)
        self.procs_error: str | None = None
        self._held_before: dict[int, dict[str, float]] = {}  # hold counters of earlier windows
        self._pause_warned = False
        self.error: str | None = None  # why the last start failed
        self.started: float | None = None
        self._lock = threading.RLock()
        self._decoders_lock = threading.Lock()
        self._closed = False
        self.ever_started = False

    @property
    def running(self) -> bool:
        return self.nsset is not None and self.nsset.running

    def start(self, interfaces: Sequence[str] | None = None) -> None:
        """Start capturing (raises CaptureError with a one-line reason).

        Every part is recorded before it starts, so ``stop`` (from another thread, or
        after a signal interrupted this) always undoes whatever did start."""
        from netsql.capture.attrib import Attributor
        from netsql.capture.live import NEEDS_LINUX, CaptureError
        from netsql.capture.nsset import CaptureSet
        from netsql.capture.procevents import ProcEventsError, ProcWatch

        with self._lock:
            if self._closed:
                return
            if interfaces is not None:
                self.interfaces = list(interfaces) or None
            self._stop_parts()
            if not hasattr(socket, "AF_PACKET"):
                self.error = NEEDS_LINUX
                raise CaptureError(NEEDS_LINUX)
            only = frozenset(self.only) if self.only else None
            procs = self.procs = ProcWatch(netns=only)
            try:
                procs.start()
                self.procs_error = None
            except ProcEventsError as exc:
                procs.stop()
                self.procs, self.procs_error = None, str(exc)
            nsset = self.nsset = CaptureSet(
                self.packet, self.interfaces, self.ports, only, self.procs,
                hold=self._hold_in if self.hold_wanted else None, on_gone=self._gone,
                on_ring=self.ring_reader if self.use_ring else None, on_start=self._warm)
            attrib = self.attrib = Attributor(set(self.ports), self.procs,
                                              keep=self.tracker.capacity + 1000,
                                              handle_of=nsset.handle_of)
            for dec in list(self.decoders.values()):
                self._hook(dec)
            attrib.start()
            try:
                # With --hold, each namespace's hold is in place before it is captured.
                nsset.open()
            except CaptureError as exc:
                self.error = str(exc)
                self._stop_parts()
                raise
            self.error = None
            # The capture threads race a sender that may close its socket 50 us after
            # the answer: let them take the interpreter within 1 ms of a packet, not 5.
            sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
            self.started = time.time()
            nsset.start()
            self.ever_started = True

    def _hold_in(self, ns: int, handle: str | None) -> tuple[Any, str | None]:
        """Start the hold of namespace ``ns`` (nsset's HoldFactory)."""
        from netsql.capture.hold import HoldError, QueryHold

        hold = QueryHold(partial(self.attrib.note_held, ns), self.ports, handle=handle,
                         netns=ns if handle is not None else None)
        try:
            hold.start()
        except (HoldError, OSError) as exc:
            hold.stop()
            return None, str(exc)
        return hold, None

    def _gone(self, ns: int) -> None:
        self.tracker.forget(ns)
        if self.attrib is not None:
            self.attrib.forget(ns)

    def _warm(self, ns: int) -> None:
        """In namespace ``ns``'s capture thread, before its first packet: the sock_diag
        sockets its attribution will use (opening one enters the namespace, a
        millisecond a short-lived client's socket may not outlive)."""
        attrib = self.attrib
        if attrib is not None:
            attrib.warm(ns)

    def _hook(self, dec: LiveDecoder) -> None:
        attrib = self.attrib
        dec.early = attrib.prefetch if attrib is not None else None
        dec.submit = attrib.submit if attrib is not None else None

    def decoder_for(self, ns: int | None) -> LiveDecoder:
        """Namespace ``ns``'s decoder (made on first use)."""
        dec = self.decoders.get(ns)
        if dec is None:
            with self._decoders_lock:
                dec = self.decoders.get(ns)
                if dec is None:
                    dec = LiveDecoder(self.tracker, ns)
                    self._hook(dec)
                    self.decoders[ns] = dec
        return dec

    def ring_reader(self, ns: int) -> Callable[[Any], int]:
        """Namespace ``ns``'s LiveCapture ``on_ring`` (nsset's RingFactory)."""
        return self.decoder_for(ns).ring

    def packet(self, ts: float, packet: bytes, interface: str, local: bool = True,
               ns: int | None = None) -> None:
        """A live packet seen in namespace ``ns`` (a LiveCapture's ``on_packet``, bound
        to its namespace by nsset: an IP packet, as cooked sockets give it); ``local``:
        sent by that namespace (or on its loopback), so a query in it has a local
        process to name."""
        self.decoder_for(ns).packet(ts, packet, interface, local)

    def settle(self, timeout: float = 2.0) -> None:
        """Wait until queued attribution work is done (after a capture window)."""
        deadline = time.monotonic() + timeout
        while self.attrib is not None and self.attrib.busy:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        time.sleep(0.02)

    def stop(self) -> None:
        with self._lock:
            self._stop_parts()

    def close(self) -> None:
        """Stop for good: a start still under way (another thread) undoes itself."""
        with self._lock:
            self._closed = True
            self._stop_parts()

    def _stop_parts(self) -> None:
        if self.nsset is not None:
            # Holds first, then readers; flows' counts stay readable afterwards.
            self.nsset.stop()
            for part in self.nsset.all_parts():
                if part.hold is not None:
                    before = self._held_before.setdefault(part.netns, {})
                    for k, v in part.hold.stats().items():
                        before[k] = before.get(k, 0) + v
                    part.hold = None
        if self.attrib is not None:
            self.attrib.stop()  # finishes its inferences: needs the process events
        if self.procs is not None:
            self.procs.stop()
            self.procs = None

    def flow_snapshot(self) -> list[Any]:
        """UDP/ICMP flows counted so far, in every captured namespace."""
        if self.nsset is None:
            return []
        return [f for part in self.nsset.all_parts() if part.flows is not None
                and part.closed is None for f in part.flows.snapshot()]

    def hold_stats(self, ns: int | None = None) -> dict[str, float]:
        """The hold's counters (of namespace ``ns``, else all) over every window so
        far (they outlive a stop)."""
        out: dict[str, float] = {}
        sources = [v for k, v in self._held_before.items() if ns is None or k == ns]
        if self.nsset is not None:
            sources += [p.hold.stats() for p in self.nsset.all_parts()
                        if p.hold is not None and (ns is None or p.netns == ns)]
        for stats in sources:
            for k, v in stats.items():
                out[k] = out.get(k, 0) + v
        return out

    def hold_warning(self) -> str | None:
        """Once per session: a flood paused the hold (queries passed unheld)."""
        held = self.hold_stats()
        if not held.get("pauses") or self._pause_warned:
            return None
        self._pause_warned = True
        return (f"the query hold was paused by a flood of DNS queries ({held['pauses']:g} "
                f"times, {held.get('passed', 0):g} queries passed unheld; attribution was "
                "passive meanwhile): see capture_stats")

    def attribution_of(self, rec: DnsRecord) -> str | None:
        """How ``rec``'s sender was named: 'socket', 'held', 'inferred' or None."""
        return self.attrib.method_of(rec) if self.attrib is not None else None

    def status(self) -> dict[str, Any]:
        """The whole capture's counters (the shell's .capture); capture_stats has a
        row per namespace (status_rows)."""
        rows = self.status_rows()
        out = empty_status(self)
        out["namespaces"] = sum(1 for r in rows if r["running"])
        out["running"] = out["namespaces"] > 0  # (the shell's prompt and toolbar show it)
        for r in rows:
            for k in SUMMED:
                out[k] = (out[k] or 0) + (r[k] or 0)
            for k in ("hold_error", "error"):
                out[k] = out[k] or r[k]
        out["error"] = self.error or out["error"]
        return out

    def status_rows(self) -> list[dict[str, Any]]:
        """capture_stats: one row per namespace captured in this window (and those that
        went away during it); one row without a namespace when none opened."""
        if self.nsset is None:
            return [empty_status(self)]
        parts = [*self.nsset.all_parts(), *self.nsset.failures()]
        buffered = self.tracker.buffered_by_netns()
        return [ns_status(self, part, buffered) for part in parts] or [empty_status(self)]

    def covers(self, ns: int | None) -> bool:
        """Whether the capture's rows include network namespace ``ns`` (serve/scope.py):
        one captured now, or, without --netns and -i, any (a new namespace is captured
        within two seconds of appearing)."""
        if ns is None:
            return False
        nsset = self.nsset
        if nsset is not None and ns in nsset.parts:
            return True
        return self.only is None and self.interfaces is None or (
            self.only is not None and ns in self.only)

    def name_for(self, address: str, net_namespace: int | None = None) -> str | None:
        """The name DNS answered with ``address`` in the network namespace
        ``net_namespace``, within its TTL. None: a row that knows no namespace (the
        psutil backend's sockets, which are netsql's own namespace's), netsql's own."""
        from netsql.capture.procevents import netns_of

        if net_namespace is None:
            net_namespace = netns_of("self")
        return self.tracker.name_for(address, net_namespace, time.time())


#: Bytes of a capture file read at a time for the compiled scan (its ranges parsed in
#: parallel): 200,000 DNS packets (21 MB) scanned in 52-56 ms with 8 MiB reads, 62-80
#: ms with 1 MiB or 32 MiB (best of 7, a busy 2-core machine).
SCAN_CHUNK = 8 << 20


class PcapSource:
    """dns_queries from capture files (pcap or pcapng), re-read when a file changes.

    Each statement scans the files for just the columns it reads (fastscan.py); the
    last scan is kept until the files or the wanted columns change.
    """

    def __init__(self, paths: Sequence[str], ports: Sequence[int] = (53,)) -> None:
        self.paths = list(paths)
        self.ports = list(ports)
        self._key: tuple[Any, ...] | None = None
        self._scans: list[tuple[str, Any, int]] = []

    def _stamp(self) -> tuple[Any, ...]:
        out: list[tuple[str, int | None, int | None]] = []
        for p in self.paths:
            try:
                st = os.stat(p)
                out.append((p, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append((p, None, None))
        return tuple(out)

    def scans(self, want: frozenset[str] | None = None) -> list[tuple[str, Any, int]]:
        """(file name, Scan, records) per file; CaptureFileError on a bad file."""
        from netsql.capture.fastscan import Scan

        key = (self._stamp(), want)
        cached = self._key
        if cached is not None and cached[0] == key[0] and (cached[1] is None or (
                want is not None and want <= cached[1])):
            return self._scans
        # (Engine.collect, the caller, has paused the cyclic GC for the pass.)
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        out = [self._scan(path, Scan(self.ports, want, threads)) for path in self.paths]
        self._key, self._scans = key, out
        return out

    @staticmethod
    def _scan(path: str, scan: Any) -> tuple[str, Any, int]:
        from netsql.capture.fastscan import COMPILED
        from netsql.capture.pcapfile import CaptureFileError, CaptureReader

        try:
            with CaptureReader(path) as reader:
                if COMPILED and reader.format == "pcap":
                    reader.feed_pcap(scan.step_threads, SCAN_CHUNK)
                else:
                    scan.feed(reader)
                records = reader.records
        except OSError as exc:
            raise CaptureFileError(f"cannot read {path}: {exc.strerror or exc}") from None
        return os.path.basename(path), scan, records

    def columns(self, want: frozenset[str] | None) -> dict[str, list[Any]]:
        """The dns_queries columns of every file, in file order."""
        merged: dict[str, list[Any]] = {}
        for name, scan, _ in self.scans(want):
            for k, v in scan.columns(want).items():
                merged.setdefault(k, []).extend(v)
            merged.setdefault("source", []).extend([name] * len(scan))
        return merged

    def name_for(self, address: str, net_namespace: int | None = None) -> str | None:
        """The name the files' newest answer with ``address`` was for. A file records
        packets, not the namespace they were seen in: its answers name sockets of any
        namespace (``net_namespace`` is not looked at; docs/dns.md)."""
        del net_namespace
        best: tuple[str, float] | None = None
        for _, scan, _ in self.scans(None):
            hit = scan.names.get(address)
            if hit is not None and (best is None or hit[1] > best[1]):
                best = hit
        return best[0] if best else None

    def status(self) -> list[dict[str, Any]]:
        out = []
        for name, s, records in self.scans(frozenset()):
            n = len(s)
            out.append({
                "source": name, "running": False, "interfaces": None, "ports": self.ports,
                "started": s.first_ts, "packets": records, "messages": s.messages,
                "queries": s.queries, "responses": s.responses,
                "duplicates": s.pairing.duplicates, "forgotten": 0,
                "malformed": s.malformed, "kernel_drops": 0, "dropped": 0, "evicted": 0,
                "buffered": n,
                "capacity": None, "unattributed": None, "by_socket": None, "by_held": None,
                "by_inferred": None, "held": 0, "hold_passed": 0, "hold_paused": 0.0,
                "hold_error": None, "process_events_error": None, "error": None,
            })
        return out
