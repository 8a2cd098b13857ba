"""DNS transactions: queries matched with their responses, in a bounded buffer.

Fed by the live capture's decoder (livescan.py), which makes each transaction's row
with the code that reads capture files (fastscan.Scan, and compiled, _cscan.c): one
decoder and one pairing rule (pairing.py) for files and live capture. A row is a list
in fastscan.COLUMNS order (addresses as raw bytes, codes as numbers, names given at
read time), then the network namespace the packet was seen in (index ``NS``). Each
namespace has a scan of its own (``scan_for``): its own pairing table, so two namespaces
using the same addresses never pair each other's messages. The tracker keeps the newest
``capacity`` rows of all namespaces (oldest evicted first, counted), a ``DnsRecord``
view of a row for whoever needs one object per transaction (attribution writes the
process there), and a map from (namespace, answered address) to the name that was
asked for (for ``sockets.remote_host``: a socket is named from its own namespace's
answers only).

Built with a compiler, the rows and the pairing tables live in _cscan.c's store
(``live``: a ring of ``capacity`` transactions, a C pairing table per namespace;
_cscan.c says why) and a row is known by its number there (``seq``); Python objects are
made for the columns a statement reads, and for the rows attribution and the names
look at (``find``, ``record``, ``answered``). Without one (or ``compiled=False``: the
pure-Python twin tests/test_livescan.py compares it with), rows are lists kept here.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter, OrderedDict, deque
from types import ModuleType
from typing import Any

from netsql.capture.fastscan import COLUMNS, Scan, coded
from netsql.capture.liverows import NS, DnsRecord, LiveRecord, LiveScan, StorePairing
from netsql.capture.pairing import Pairing
from netsql.schema import Columns

_cscan: ModuleType | None
try:
    from netsql.capture import _cscan
except ImportError:  # built without a C compiler: rows kept here as lists
    _cscan = None

ADDRESS_TYPES = ("A", "AAAA")
#: An answered address keeps its name for at least this long, even with TTL 0:
#: applications connect right after resolving, and local resolvers often answer TTL 0.
MIN_NAME_SECONDS = 10.0
#: Columns a record adds to its row (attribution's, and where it came from).
EXTRA = ("pid", "process", "uid", "forwarder", "source")



class DnsTracker:
    """The live buffer, fed by one LiveScan per network namespace (``scan_for``)."""

    def __init__(self, capacity: int = 100_000, max_pending: int = 65_536,
                 max_names: int = 200_000, ports: Any = (53,),
                 compiled: bool | None = None) -> None:
        self.capacity = capacity
        if compiled is None:
            compiled = _cscan is not None and hasattr(_cscan, "live_new")
        #: The compiled store (rows and pairing tables), or None: rows kept here.
        self.max_pending = max_pending  # open transactions kept per namespace
        self.live: Any = (_cscan.live_new(max(capacity, 1), 3, max(max_pending, 1))
                          if compiled and _cscan else None)
        self.ports = ports
        #: One scan (and pairing table) per namespace; None: packets given no namespace.
        self.scans: dict[int | None, LiveScan] = {}
        self.scan = self.scan_for(None)
        self.records: deque[list[Any]] = deque()
        self.views: dict[int, DnsRecord] = {}  # id(row): its record, once one was made
        #: (namespace, answered address) -> (name asked for, expiry, time seen).
        self.names: OrderedDict[tuple[int | None, str], tuple[str, float, float]] = (
            OrderedDict())
        self.max_names = max_names
        self.lock = threading.Lock()
        #: One batch decoded at a time, whatever its namespace (the buffer, the names
        #: and the records are shared; live_ring holds the GIL anyway).
        self.feeding = threading.Lock()
        self.evicted = 0  # records pushed out of the buffer
        self.appended = 0  # records ever appended (the pure-Python buffer's sequence)
        self.evicted_by: Counter[int | None] = Counter()  # the same, per namespace
        self._columns = Scan(ports, None)  # reads the buffer's rows as columns
        self._reading = threading.Lock()  # one reader of it at a time

    def scan_for(self, ns: int | None) -> LiveScan:
        """The scan of namespace ``ns`` (made on first use)."""
        scan = self.scans.get(ns)
        if scan is None:
            scan = self.scans[ns] = LiveScan(self.ports, max(self.max_pending, 1))
        return scan

    @property
    def pairing(self) -> Pairing | StorePairing:
        """The pairing table of packets given no namespace."""
        return self.scan.pairing if self.live is None else StorePairing(self, None)

    def stats(self, ns: int | None) -> tuple[int, int, int]:
        """The compiled store's (buffered, evicted, open) of namespace ``ns``."""
        assert _cscan is not None
        for s_ns, buffered, evicted, open_ in _cscan.live_stats(self.live)[0]:
            if s_ns == ns:
                return buffered, evicted, open_
        return 0, 0, 0

    def _sum(self, name: str) -> int:
        return sum(getattr(s, name) for s in list(self.scans.values()))

    @property
    def messages(self) -> int:
        return self._sum("messages")

    @property
    def queries(self) -> int:
        return self._sum("queries")

    @property
    def responses(self) -> int:
        return self._sum("responses")

    @property
    def malformed(self) -> int:
        return self._sum("malformed")

    @property
    def duplicates(self) -> int:
        """Copies and retransmissions folded into a transaction."""
        return sum(s.pairing.duplicates for s in list(self.scans.values()))

    def counts(self, ns: int | None) -> dict[str, int]:
        """Namespace ``ns``'s counters (capture_stats' row)."""
        s = self.scans.get(ns)
        evicted = self.evicted_by.get(ns, 0) if self.live is None else self.stats(ns)[1]
        if s is None:
            return {"messages": 0, "queries": 0, "responses": 0, "duplicates": 0,
                    "forgotten": 0, "malformed": 0, "evicted": evicted}
        return {"messages": s.messages, "queries": s.queries, "responses": s.responses,
                "duplicates": s.pairing.duplicates, "forgotten": s.pairing.forgotten,
                "malformed": s.malformed, "evicted": evicted}

    def buffered_by_netns(self) -> Counter[int | None]:
        """How many buffered rows each namespace has (one pass for all rows)."""
        if self.live is not None:
            assert _cscan is not None
            return Counter({ns: n for ns, n, _, _ in _cscan.live_stats(self.live)[0] if n})
        with self.lock:
            rows = list(self.records)
        return Counter(r[NS] for r in rows)

    def take(self, ns: int | None = None) -> list[tuple[Any, ...]]:
        """Move the rows namespace ``ns``'s scan made since the last call into the
        buffer, each given its namespace; the scan's marks (for the caller, before
        ``trim``)."""
        scan = self.scan_for(ns)
        marks, scan.marks = scan.marks, []
        if self.live is not None:  # the rows are in the store already
            if self.views:
                self._prune()
            return marks
        rows, scan.rows = scan.rows, []
        if scan.names:  # the file scan's address map: the tracker keeps its own, bounded
            scan.names.clear()
        if rows:
            for r in rows:
                r.append(ns)
            with self.lock:
                self._append(rows)
        return marks

    def forget(self, ns: int) -> None:
        """Namespace ``ns`` went away: its open transactions with it (its counters
        stay, for capture_stats)."""
        if self.live is not None:
            assert _cscan is not None
            with self.feeding:  # (not while a batch is decoded into that table)
                _cscan.live_forget(self.live, ns)
            return
        s = self.scans.get(ns)
        if s is not None:
            s.pairing.forget_all()

    def find(self, ns: int | None, transport: str, client: bytes, client_port: int,
             server: bytes, server_port: int, tid: int) -> Any:
        """The row of the transaction with this key in namespace ``ns`` (the row
        itself, or its number in the compiled store), or None."""
        if self.live is not None:
            assert _cscan is not None
            return _cscan.live_find(self.live, ns, transport == "tcp", client, client_port,
                                    server, server_port, tid)
        e = self.scan_for(ns).pairing.table.get(
            (transport, client, client_port, server, server_port, tid))
        return None if e is None else e[2]

    def _prune(self) -> None:
        """Forget the records of rows the compiled store evicted."""
        assert _cscan is not None
        head = _cscan.live_stats(self.live)[1]
        views = self.views
        while views:
            seq = next(iter(views))
            if seq >= head:
                return
            del views[seq]

    def _append(self, rows: list[list[Any]]) -> None:
        records = self.records
        self.appended += len(rows)
        over = len(records) + len(rows) - self.capacity
        if over > 0:
            self.evicted += over
            views, by = self.views, self.evicted_by
            for _ in range(min(over, len(records))):
                old = records.popleft()
                by[old[NS]] += 1
                if views:
                    views.pop(id(old), None)
            if len(rows) > self.capacity:
                for r in rows[:-self.capacity]:
                    by[r[NS]] += 1
                rows = rows[-self.capacity:]
        records.extend(rows)

    def record(self, row: Any) -> tuple[DnsRecord, bool]:
        """The record of ``row`` (``find``'s; made once, then the same object); True
        when new."""
        if self.live is not None:
            assert _cscan is not None
            rec = self.views.get(row)
            if rec is not None:
                return rec, False
            rec = self.views[row] = LiveRecord(_cscan.live_row(self.live, row), self.live, row)
            return rec, True
        rec = self.views.get(id(row))
        if rec is not None and rec.row is row:
            return rec, False
        rec = self.views[id(row)] = DnsRecord(row)
        return rec, True

    def answered(self, row: Any) -> None:
        """``row`` (``find``'s) got its response: its addresses now name its query."""
        if self.live is not None:
            assert _cscan is not None
            got = _cscan.live_answers(self.live, row)
            if got is None:
                return
            ts, query, answers, types, ttls, ns = got
        else:
            answers = row[12]
            if not answers:
                return
            ts, query, types, ttls = row[0] + (row[15] or 0.0), row[7], row[13], row[14]
            ns = row[NS]
        names = self.names
        for text, rtype, ttl in zip(answers, types, ttls, strict=False):
            if rtype in ADDRESS_TYPES:
                names[(ns, text)] = (query, ts + max(ttl, MIN_NAME_SECONDS), ts)
                names.move_to_end((ns, text))
        while len(names) > self.max_names:
            names.popitem(last=False)

    def snapshot(self) -> list[DnsRecord]:
        return self.since(0)[1]

    def since(self, seq: int) -> tuple[int, list[DnsRecord]]:
        """The buffered records from sequence number ``seq`` on (each record appended
        has the next; the evicted ones are gone), in arrival order, and the sequence
        number of the first of them."""
        views = self.views
        if self.live is not None:
            assert _cscan is not None
            first, rows = _cscan.live_rows(self.live, seq)
            return first, [views.get(first + i) or DnsRecord(r) for i, r in enumerate(rows)]
        with self.lock:
            head = self.appended - len(self.records)
            first = max(seq, head)
            rows = list(itertools.islice(self.records, first - head, None))
        return first, [views.get(id(r)) or DnsRecord(r) for r in rows]

    def columns(self, want: frozenset[str] | None
                ) -> tuple[Columns, list[DnsRecord | None] | None]:
        """The buffer's dns_queries columns (``want``: those read, all when None; ts
        always, its length the rows': from the compiled store, None values when not
        wanted) and each row's record, or None when no row has one."""
        views = self.views
        if self.live is not None:
            cols, namespaces, recs = self._store_columns(want)
        else:
            with self.lock:
                rows = list(self.records)
            with self._reading:
                reader = self._columns
                reader.rows = rows
                try:
                    cols = reader.columns(want)
                finally:
                    reader.rows = []
            recs = [views.get(id(r)) for r in rows] if views else None
            namespaces = [r[NS] for r in rows]
        n = len(cols["ts"])
        for name in EXTRA[:-1]:
            if want is None or name in want:
                cols[name] = ([None] * n if recs is None else
                              [getattr(v, name) if v is not None else None for v in recs])
        if want is None or "source" in want:
            cols["source"] = ["live"] * n
        if want is None or "net_namespace" in want:
            cols["net_namespace"] = namespaces
        return cols, recs

    def _store_columns(self, want: frozenset[str] | None
                       ) -> tuple[Columns, list[Any], list[DnsRecord | None] | None]:
        """``columns`` from the compiled store: (columns, namespaces, records)."""
        assert _cscan is not None
        wanted = [i for i, name in enumerate(COLUMNS) if want is None or name in want]
        views = self.views
        with_seq = bool(views)
        extra = [NS] + ([NS + 1] if with_seq else [])  # the namespace, the seq
        built = _cscan.live_columns(self.live, tuple(wanted + extra))
        cols: Columns = {COLUMNS[i]: coded(COLUMNS[i], v)
                         for i, v in zip(wanted, built, strict=False)}
        namespaces = built[len(wanted)]
        if "ts" not in cols:  # (1,000,000 floats nobody reads: 40 ms)
            cols["ts"] = [None] * len(namespaces)
        recs = [views.get(s) for s in built[-1]] if with_seq else None
        return cols, namespaces, recs

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
