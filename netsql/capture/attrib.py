"""Which process sent a captured DNS query, found passively (nothing on the host changes).

Three ways, strongest first (``dns_queries.attribution`` says which named a row):

- 'socket': the kernel's own socket lookup (sock_diag, exact 4-tuple) names the
  sending socket's inode, uid and cgroup the moment the packet is seen; the process
  holding that inode is found among the candidates: the processes of that uid in
  the network namespace the packet was seen in, those that asked lately first, then
  the newest (from the kernel's process events, procevents.py). O(candidates), never
  every fd on the host.
- 'held': the opt-in hold (hold.py) looked the sender up while the kernel held the
  packet (the sender was certainly alive and holding the socket).
- 'inferred': the socket was gone when looked up. The candidates are the processes
  alive at the packet's instant (of the socket's uid and cgroup when the lookup
  caught those, in the packet's network namespace) that exited right after its answer; when
  exactly one did, it is named. Never a guess between two.

Every lookup happens in the namespace the packet was seen in (its sock_diag socket is
opened there, nsset.CaptureSet's handle): two namespaces may use the same addresses.

Work that cannot be done at once (a flood, a slow scan, an inference that must wait
for exits to be reported) runs in the attribution thread, so the capture loop never
stalls.

Here: the Attributor (the process holding a socket, the hold's names, the inference,
the forwarding stubs). The socket lookups are querysock.py's; how each query was named
and the counts, attribcounts.py's.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator

from netsql.capture.attribcounts import Tally
from netsql.capture.owners import FdHints, Owner, newest_pids, scan_for
from netsql.capture.procevents import ProcWatch, cgroup_id, netns_of
from netsql.capture.querysock import Hit, Key, QuerySockets, key_of
from netsql.capture.tracker import DnsRecord

#: A sender inferred from its exit exited at most this long after its query's answer
#: arrived (kernel times of packet and exit), or after the query, when unanswered.
EXIT_WINDOW = 0.25


class Attributor:
    """Fills ``pid``, ``process``, ``uid`` and ``forwarder`` of query records, and
    remembers how each was named (``method_of``)."""

    def __init__(self, dns_ports: set[int], procs: ProcWatch | None = None,
                 max_queue: int = 10_000, keep: int = 100_000,
                 handle_of: Callable[[int | None], str | None] | None = None) -> None:
        self.procs = procs
        self.netns = netns_of("self")  # netsql's own
        #: A handle to enter a captured namespace (nsset.CaptureSet.handle_of).
        self.handle_of = handle_of or (lambda _ns: None)
        self.queue: queue.Queue[tuple[DnsRecord, Hit | None, int] | None] = queue.Queue(
            max_queue)
        self.sync_limit = 2000
        self.sync_candidates = 64  # processes scanned at once in the capture thread
        self._held: OrderedDict[Key, tuple[float, int, Owner]] = OrderedDict()
        #: Per namespace: [start of this second, queries looked up at once in it]. A
        #: flood in one namespace does not use up the lookups of the others.
        self._windows: dict[int | None, list[float]] = {}
        #: pids that asked lately -> their namespace (a flood elsewhere must not push a
        #: namespace's own askers out of its candidates)
        self.recent: dict[int | None, OrderedDict[int, None]] = {}
        self.inode_owner: OrderedDict[int, Owner] = OrderedDict()
        self.hints = FdHints()
        self.to_stubs: deque[DnsRecord] = deque(maxlen=1024)
        self.stub_owner: dict[tuple[int | None, str, int], Owner] = {}
        self.asked: OrderedDict[int, list[DnsRecord]] = OrderedDict()  # pid: its last queries
        self.tally = Tally(keep)  # how each was named, the counts
        self.pending: list[tuple[float, DnsRecord, Hit | None, int]] = []
        self._own = os.getpid()
        self._wall_offset = time.time_ns() - time.monotonic_ns()  # wall - monotonic
        self.sockets = QuerySockets(self.netns, self.handle_of, dns_ports)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- life --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="netsql-attrib", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.queue.put(None)
            self._thread.join(timeout=EXIT_WINDOW + 3)
            self._thread = None
        self.sockets.diags.close()

    def forget(self, ns: int) -> None:
        """Namespace ``ns`` is gone: close its sock_diag sockets (they would keep it
        alive)."""
        self._windows.pop(ns, None)
        self.recent.pop(ns, None)
        self.sockets.diags.forget(ns)

    @property
    def busy(self) -> bool:
        """Work queued or waiting for exits to be reported."""
        return not self.queue.empty() or bool(self.pending)

    def method_of(self, rec: DnsRecord) -> str | None:
        return self.tally.method_of(rec)

    def counts_of(self, ns: int | None) -> dict[str, int]:
        """attribcounts.COUNTS of namespace ``ns``'s queries."""
        return self.tally.counts_of(ns)

    # -- the capture thread ------------------------------------------------------------
    def prefetch(self, ns: int | None, transport: str, client: str, cport: int,
                 server: str, sport: int) -> None:
        """Look the sending socket up now, before the packet is even decoded as DNS
        (every microsecond counts against a client that exits at once)."""
        key = (ns, transport, client, cport, server, sport)
        if self.sockets.fresh(key) is None:
            self.sockets.keep(key, self.sockets.lookup(key))

    def submit(self, rec: DnsRecord) -> None:
        """Called by the capture thread the moment a query is seen: the socket lookup
        and a scan of the likeliest candidates run here; anything slower goes to the
        attribution thread (everything, under a flood of ``sync_limit`` a second in
        the record's namespace)."""
        seen = time.monotonic_ns()
        key = key_of(rec)
        if rec.server_address.startswith("127.") or rec.server_address == "::1":
            self.to_stubs.append(rec)  # a local stub resolver may forward it upstream
        if self._from_hold(rec, key):
            return
        now = time.monotonic()
        window = self._windows.get(rec.net_namespace)
        if window is None or now - window[0] >= 1.0:
            window = self._windows[rec.net_namespace] = [now, 0]
        window[1] += 1
        hit = self.sockets.fresh(key)
        if window[1] <= self.sync_limit:
            if hit is None:
                hit = self.sockets.lookup(key)
            if hit is not None:
                rec.uid = hit[1]
                owner = self._owner(hit, self.sync_candidates, rec.net_namespace)
                if owner is not None:
                    self._name(rec, owner, "socket")
                    return
        try:
            self.queue.put_nowait((rec, hit, seen))
        except queue.Full:
            self.tally.skip(rec)

    # -- the hold ----------------------------------------------------------------------
    def note_held(self, ns: int | None, tuple5: tuple[str, str, int, str, int], inode: int,
                  pid: int, comm: str | None) -> None:
        """The hold of namespace ``ns`` named the sender of ``tuple5`` (transport,
        client, client port, server, server port) while its packet was held."""
        key = (ns, *tuple5)
        with self._lock:
            self._held[key] = (time.monotonic(), inode, (pid, comm))
            self._held.move_to_end(key)
            while len(self._held) > 4096:
                self._held.popitem(last=False)
        self._remember(inode, (pid, comm))

    def _from_hold(self, rec: DnsRecord, key: Key) -> bool:
        with self._lock:
            entry = self._held.get(key)
        if entry is None or time.monotonic() - entry[0] > 2.0:
            return False
        self._name(rec, entry[2], "held")
        return True

    # -- lookups -----------------------------------------------------------------------
    def _owner(self, hit: Hit, limit: int | None, ns: int | None) -> Owner | None:
        """The process holding socket ``hit`` (of namespace ``ns``): cached, else among
        the candidates."""
        inode, uid, _ = hit
        owner = self.inode_owner.get(inode)
        if owner is not None:
            return owner
        owner = scan_for({inode}, self.candidates(uid, limit, ns), self.hints).get(inode)
        if owner is not None:
            self._remember(inode, owner)
        return owner

    def candidates(self, uid: int | None, limit: int | None,
                   ns: int | None = None) -> Iterator[int]:
        """Pids that may hold a socket of ``uid`` in namespace ``ns``: those that asked
        lately, then the newest (listed only if those did not hold it). Without process
        events (not root): the newest pids."""
        recent = list(reversed(self.recent.get(ns, ())))
        yield from recent[:limit]
        left = None if limit is None else limit - len(recent)
        if left is not None and left <= 0:
            return
        if self.procs is None:
            yield from newest_pids()[:left]
        else:
            yield from self.procs.candidates(uid, ns, left or 1_000_000)

    def warm(self, ns: int | None) -> None:
        """Open this thread's sock_diag sockets of namespace ``ns`` now."""
        self.sockets.warm(ns)

    def _remember(self, inode: int, owner: Owner) -> None:
        self.inode_owner[inode] = owner
        while len(self.inode_owner) > 50_000:
            self.inode_owner.popitem(last=False)

    # -- the attribution thread --------------------------------------------------------
    def _run(self) -> None:
        drain_until: float | None = None  # stopping: finish the inferences first
        while True:
            batch: list[tuple[DnsRecord, Hit | None, int] | None] = []
            try:
                batch.append(self.queue.get(timeout=0.05))
                while True:
                    batch.append(self.queue.get_nowait())
            except queue.Empty:
                pass
            items = [b for b in batch if b is not None]
            if items:
                self.attribute(items)
            if None in batch and drain_until is None:
                drain_until = time.monotonic() + EXIT_WINDOW + 1.2
            final = drain_until is not None and time.monotonic() > drain_until
            self._infer_due(final=final)
            if drain_until is not None and (final or not self.pending):
                return

    def attribute(self, items: list[tuple[DnsRecord, Hit | None, int]]) -> None:
        """Queued records: the hold's answer, else the socket's owner among every
        candidate, else wait for process exits (``pending``)."""
        for rec, hit, seen in items:
            key = key_of(rec)
            if self._from_hold(rec, key):
                continue
            if hit is None:
                hit = self.sockets.fresh(key) or self.sockets.lookup(key)
            if hit is not None:
                rec.uid = hit[1]
                owner = self._owner(hit, None, rec.net_namespace)
                if owner is not None:
                    self._name(rec, owner, "socket")
                    continue
            if len(self.pending) >= 20_000:  # bounded: a flood of vanished senders
                self.tally.miss(rec)
                continue
            self.pending.append((time.monotonic(), rec, hit, seen))

    def _infer_due(self, final: bool) -> None:
        """Infer the senders whose exit window has closed (all of them when ``final``):
        EXIT_WINDOW after the answer was seen, or after a second more when unanswered,
        plus a little for the exit events to arrive."""
        if not self.pending:
            return
        now = time.monotonic_ns()
        keep = []
        for item in self.pending:
            _, rec, hit, seen = item
            after = rec.rtt if rec.status == "answered" and rec.rtt is not None else 1.0
            if not final and now < seen + int((after + EXIT_WINDOW + 0.1) * 1e9):
                keep.append(item)
                continue
            self._infer(rec, hit, seen)
        self.pending = keep

    def _infer(self, rec: DnsRecord, hit: Hit | None, seen: int) -> None:
        if self._from_hold(rec, key_of(rec)):
            return
        stub = self._forwarded_by(rec)
        if stub is not None:
            self._name(rec, stub, "inferred", forwarder=True)
            return
        if self.procs is None:
            self.tally.miss(rec)
            return
        # The kernel's times: the query left at `sent`, its answer arrived at `answer`;
        # the sender was alive at `sent` and exited after `answer`.
        sent = int(rec.ts * 1e9) - self._wall_offset
        answer = sent + int(rec.rtt * 1e9) if rec.rtt is not None else sent
        upto = answer + int((EXIT_WINDOW + (0 if rec.rtt is not None else 1.0)) * 1e9)
        uid = hit[1] if hit is not None else None
        found = [p for p in self.procs.exited_between(answer, upto, sent, uid,
                                                      rec.net_namespace)
                 if p.pid != self._own and not self._explained(p.pid, answer, p.exit_ns)]
        if hit is not None and hit[2] is not None and len(found) > 1:
            found = [p for p in found if p.cgroup is None or cgroup_id(p.cgroup) == hit[2]]
        if len(found) != 1:
            self.tally.miss(rec)
            self.tally.ambiguous += len(found) > 1
            return
        p = found[0]
        rec.uid = p.uid if rec.uid is None else rec.uid
        self._name(rec, (p.pid, p.comm), "inferred", forwarder=False)

    # -- naming ------------------------------------------------------------------------
    def _note_recent(self, pid: int, ns: int | None) -> None:
        recent = self.recent.get(ns)
        if recent is None:
            recent = self.recent[ns] = OrderedDict()
        recent[pid] = None
        recent.move_to_end(pid)
        while len(recent) > 256:
            recent.popitem(last=False)

    def _name(self, rec: DnsRecord, owner: Owner, method: str,
              forwarder: bool | None = None) -> None:
        rec.pid, rec.process = owner
        with self._lock:
            self.tally.named(rec, method)
            asked = self.asked.setdefault(owner[0], [])
            asked[:] = [*asked[-7:], rec]
            self.asked.move_to_end(owner[0])
            while len(self.asked) > 4096:
                self.asked.popitem(last=False)
        if method == "inferred":
            rec.forwarder = forwarder
            return
        self._note_recent(owner[0], rec.net_namespace)
        rec.forwarder = self.sockets.serves_dns(owner[0], rec.net_namespace)

    def _forwarded_by(self, rec: DnsRecord) -> Owner | None:
        """The local stub resolver that had just been asked the same question (and had
        not answered yet) when ``rec`` left: its upstream query. None unless exactly one."""
        if rec.server_address.startswith("127.") or rec.server_address == "::1":
            return None
        asked = [r for r in list(self.to_stubs)
                 if r.query == rec.query and r.qtype == rec.qtype and r.ts <= rec.ts
                 and r.net_namespace == rec.net_namespace
                 and (r.rtt is None or r.ts + r.rtt >= rec.ts)]
        stubs = {(r.server_address, r.server_port, r.transport): r for r in asked}
        if len(stubs) != 1:
            return None
        r = next(iter(stubs.values()))
        where = (r.net_namespace, r.server_address, r.server_port)
        owner = self.stub_owner.get(where)
        if owner is not None and os.path.exists(f"/proc/{owner[0]}"):
            return owner
        hit = self.sockets.lookup((r.net_namespace, r.transport, r.server_address,
                                   r.server_port, r.client_address, r.client_port))
        owner = self._owner(hit, None, r.net_namespace) if hit is not None else None
        if owner is not None:
            self.stub_owner[where] = owner
        return owner

    def _explained(self, pid: int, answer: int, exit_ns: int | None) -> bool:
        """Whether ``pid``'s exit is better explained by an answer to a query of its
        own that came after ``answer`` (an application whose stub resolver forwarded
        its query exits after the stub's answer, not after the upstream one)."""
        with self._lock:
            mine = list(self.asked.get(pid, ()))
        for rec in mine:
            if rec.rtt is None:
                continue
            own = int((rec.ts + rec.rtt) * 1e9) - self._wall_offset
            if answer < own <= (exit_ns or own):
                return True
        return False
