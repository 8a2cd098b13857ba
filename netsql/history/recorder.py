"""The recorder behind `netsql serve --record DIR`: connection lives, process lives and
DNS transactions, flushed to the history tree (store.py) every ``flush_seconds``.

How each is seen (docs/history.md says what each case can and cannot show):
- connections: every ``poll_seconds`` a sock_diag dump of each network namespace
  (connected TCP and UDP sockets, TCP with its counters); a connection is one life from
  the first poll or notification that shows it to the one that shows it gone. The
  kernel's destroy notifications (sock_diag multicast, root) add the connections that
  lived between two polls, with their last counters, and end the others at the instant
  they closed. The owning process is looked up when a connection is first seen.
- processes: every poll lists /proc; a process life runs from its start time to the
  first poll that finds it gone (``exited`` from a process event source, when one is
  given, ends it at once and adds the ones that lived between polls).
- dns_queries: the transactions a capture finished (answered, or given up on).

A life still going is written again at each flush with its newest values; the
history views keep the newest observation of each.
"""

from __future__ import annotations

import errno
import select
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from netsql import procfs, sockdiag
from netsql.backends import linux_procs
from netsql.collect import Collection, Need, State
from netsql.history import flowid
from netsql.history.store import Store
from netsql.history.tables import CONNECTIONS, DNS_QUERIES, PROCESSES

_TCP_STATE = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1",
              5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK",
              10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}
#: TCP states a connection can be in while its owner holds it (not LISTEN, TIME_WAIT,
#: CLOSE, NEW_SYN_RECV), as sock_diag's state mask.
_CONNECTED = sum(1 << st for st in (1, 2, 3, 4, 5, 8, 9, 11))
#: The share of a core polling may use: a poll that costs more makes the next one wait
#: longer (first_seen and last_seen are then that much less precise).
CPU_BUDGET = 0.02
#: A life still going whose values did not change is written again after this long.
REFRESH_SECONDS = 600.0
_PROCESS_FACTS = frozenset({"pid", "ppid", "name", "path", "cmdline", "uid", "start_time",
                            "net_namespace", "container_id"})
#: How long an ended connection is remembered (its destroy notification can come a
#: FIN_WAIT2 timeout, 60 s by default, after its owner closed it).
ENDED_MEMORY = 180.0
#: A connection's key: namespace, protocol, family, local and remote address and port.
ConnKey = tuple[int, str, int, str, int, str, int]


@dataclass
class Life:
    """One connection or process life, with the values of its newest observation."""

    values: dict[str, Any]
    ended: bool = False
    #: When it was last written, and what changed-looking values it had then.
    written: float | None = None
    signature: tuple[Any, ...] = ()

    def changes(self) -> tuple[Any, ...]:
        v = self.values
        return (v.get("bytes_sent"), v.get("bytes_received"), v.get("state"), self.ended)


@dataclass
class Recorder:
    store: Store
    flush_seconds: float = 60.0
    poll_seconds: float = 1.0
    #: () -> DNS records (capture/tracker.DnsRecord-like) finished since the last call.
    dns_source: Callable[[], Iterable[Any]] | None = None
    #: (net_namespace, address) -> the name DNS answered for it there, or None.
    names: Callable[[int, str], str | None] | None = None
    clock: Callable[[], float] = time.time
    conns: dict[ConnKey, Life] = field(default_factory=dict)
    procs: dict[tuple[int, float], Life] = field(default_factory=dict)
    pending_dns: list[dict[str, Any]] = field(default_factory=list)
    state: State = field(default_factory=State)
    lock: threading.Lock = field(default_factory=threading.Lock)
    errors: list[str] = field(default_factory=list)
    #: Connections that ended -> when: a later notification of their destruction
    #: brings their last counters, not a new life.
    ended: dict[ConnKey, float] = field(default_factory=dict)
    #: Socket inode -> key of the connections the last poll saw held; pid -> key of
    #: the live processes.
    live: dict[int, ConnKey] = field(default_factory=dict)
    live_pids: dict[int, tuple[int, float]] = field(default_factory=dict)
    last_poll: float = 0.0
    #: Seconds between polls now (poll_seconds, more when a poll costs more than the
    #: CPU budget allows).
    interval: float = 1.0
    #: The process event source (capture.procevents.ProcWatch) while it runs.
    proc_watch: Any = None
    #: One sock_diag socket per namespace, kept open between polls.
    diag_socks: dict[int, Any] = field(default_factory=dict)
    #: Times the kernel dropped destroy notifications we did not read in time.
    overruns: int = 0
    #: Set once destroy notifications are being received in every namespace.
    watching: threading.Event = field(default_factory=threading.Event)

    # -- polling ---------------------------------------------------------------------

    def poll(self) -> None:
        """One pass: processes, then connections (whose owners it names)."""
        now = self.clock()
        coll = Collection(state=self.state)
        with self.lock:
            self._poll_processes(coll, now)
            self._poll_connections(coll, now)
            self._take_dns()

    def _poll_processes(self, coll: Collection, now: float) -> None:
        alive = set(procfs.pids_of(coll))
        new = alive - self.live_pids.keys()
        if new:
            self._begin_processes(coll, new, now)
        for pid in self.live_pids.keys() - alive:
            self._end_process(self.procs[self.live_pids.pop(pid)], now)

    def _begin_processes(self, coll: Collection, pids: set[int], now: float) -> None:
        # The native reader whatever NETSQL_BACKEND says: the recorder is Linux's
        # (sock_diag), and its process lives carry the namespace and container.
        facts = linux_procs.processes(coll, Need(_PROCESS_FACTS, frozenset(pids)))
        for row in _rows(facts):
            key = (row["pid"], row["start_time"])
            old = self.live_pids.get(row["pid"])
            if old is not None and old != key:  # the pid was reused: that life ended
                self._end_process(self.procs[old], now)
            if key not in self.procs:
                self.procs[key] = Life(dict(row, last_seen=now))
            self.live_pids[row["pid"]] = key

    # -- process events (the kernel's proc connector), when root ------------------------

    def watch_processes(self) -> str | None:
        """Follow exec and exit events, so a process that lives between two polls is
        recorded too, and an exit ends its life at once; the polls stay as the
        fallback. Returns why not, when the kernel refuses."""
        from netsql.capture.procevents import ProcEventsError, ProcWatch

        watch = ProcWatch(keep_exited=16, on_exec=self._exec_event, on_exit=self._exit_event)
        try:
            watch.start()
        except ProcEventsError as exc:
            return str(exc)
        self.proc_watch = watch
        return None

    @staticmethod
    def _wall(ts_ns: int) -> float:
        return time.time() - (time.monotonic_ns() - ts_ns) / 1e9

    def _exec_event(self, pid: int, ts_ns: int) -> None:
        """Read the new program's facts at once (it may be gone in a millisecond)."""
        with self.lock:
            self._begin_processes(Collection(state=self.state), {pid}, self._wall(ts_ns))

    def _exit_event(self, pid: int, ts_ns: int) -> None:
        self.exited(pid, self._wall(ts_ns))

    @staticmethod
    def _end_process(life: Life, when: float) -> None:
        life.values["end_time"] = life.values["last_seen"] = when
        life.ended = True

    def exited(self, pid: int, when: float) -> None:
        """A process event source saw ``pid`` exit at ``when``."""
        with self.lock:
            key = self.live_pids.pop(pid, None)
            if key is not None:
                self._end_process(self.procs[key], when)

    def _poll_connections(self, coll: Collection, now: float) -> None:
        """New connections get a life (and their owner looked up); lives whose socket is
        gone end. A held socket is known by its inode, so a poll costs a dump without
        tcp_info and two set differences of integers, not work per connection; counters
        and states are taken at flush time (and from destroy notifications)."""
        seen = self._dump(coll, info=False)
        fresh = seen.keys() - self.live.keys()
        gone = self.live.keys() - seen.keys()
        for inode in gone:
            key = self.live.pop(inode)
            self._end_connection(key, self.conns[key], now)
        if fresh:
            owners = procfs.socket_owners(coll, expect=fresh)
            for inode in fresh:
                ns, proto, row = seen[inode]
                key = _key(ns, proto, row)
                if key in self.ended or key in self.conns:
                    continue  # ended between the dump and now, or a reused tuple
                self.conns[key] = Life(self._connection(key, row, now, owners))
                self.live[inode] = key
            for key in [k for k, t in self.ended.items() if t < now - ENDED_MEMORY]:
                del self.ended[key]
        self.last_poll = now

    def _dump(self, coll: Collection, info: bool) -> dict[int, tuple[int, str, Any]]:
        """Every connected TCP and UDP socket an owner holds, of every namespace, by
        inode: (namespace, protocol, sock_diag row). A TCP socket its owner closed
        (orphaned: no inode) or in TIME_WAIT has ended."""
        seen: dict[int, tuple[int, str, Any]] = {}
        own = procfs.own_netns()
        present = procfs.namespaces(coll)
        socks = self.diag_socks
        for ns in socks.keys() - present.keys():
            socks.pop(ns).close()
        for ns, handle in present.items():
            sock = socks.get(ns)
            if sock is None:  # kept open across polls: no thread or setns per poll
                try:
                    sock = socks[ns] = sockdiag.open_socket(None if ns == own else handle)
                except OSError:
                    continue
            try:
                for family in (2, 10):
                    rows = sockdiag.rows(sock, family, 6, states=_CONNECTED, info=info)
                    seen.update((r[9], (ns, "tcp", r)) for r in rows if r[9])
                    rows = sockdiag.rows(sock, family, 17)
                    seen.update((r[9], (ns, "udp", r)) for r in rows
                                if r[5] is not None and r[9])
            except OSError as exc:
                self._error(f"sock_diag in namespace {ns}: {exc}")
                socks.pop(ns).close()
        return seen

    def _connection(self, key: ConnKey, row: Any, now: float,
                    owners: procfs.Owners | None) -> dict[str, Any]:
        ns, proto, family, local, lport, remote, rport = key
        owner = owners.first.get(row[9]) if owners is not None and row[9] else None
        pid = owner[0] if owner else None
        proc = self._process_of(pid)
        values = {
            # A destroyed socket (no inode) no longer tells its owner's uid.
            "first_seen": now, "last_seen": now, "pid": pid, "uid": row[8] if row[9] else None,
            "process": proc.get("name"), "path": proc.get("path"),
            "container_id": proc.get("container_id"), "protocol": proto,
            "family": "ipv4" if family == 2 else "ipv6", "local_address": local,
            "local_port": lport, "remote_address": remote, "remote_port": rport,
            "net_namespace": ns, "inode": row[9] or None,
            "community_id": flowid.community_id(proto, local, lport, remote, rport),
            "state": _TCP_STATE.get(row[1]) if proto == "tcp" else "ESTABLISHED",
        }
        if self.names is not None:
            values["remote_host"] = self.names(ns, remote)
        _counters(values, row)
        return values

    def first_seen(self, inodes: list[Any]) -> list[float | None]:
        """When each socket's connection was first seen (epoch seconds, as the live
        tables' times load), by inode; None for one not held as a connection when last
        polled."""
        with self.lock:
            found = {ino: self.conns[key].values["first_seen"]
                     for ino, key in self.live.items()}
        return [found.get(i) for i in inodes]

    def _process_of(self, pid: int | None) -> dict[str, Any]:
        key = self.live_pids.get(pid) if pid is not None else None
        return self.procs[key].values if key is not None else {}

    def destroyed(self, ns: int, proto: str, row: Any, when: float) -> None:
        """A destroy notification: end the connection at ``when`` with its last
        counters, or record the whole life when no poll saw it."""
        if row[5] is None:
            return  # an unconnected socket: not a connection
        key = _key(ns, proto, row)
        with self.lock:
            life = self.conns.get(key)
            if key in self.ended:  # the owner had closed it: keep its end, take counters
                if life is not None and life.ended:
                    _counters(life.values, row)
                return
            if life is None:  # it lived between two polls
                life = self.conns[key] = Life(self._connection(key, row, when, None))
            _update(life, row, when)
            self._end_connection(key, life, when)

    def _end_connection(self, key: ConnKey, life: Life, when: float) -> None:
        life.values["state"] = "CLOSED"
        life.values["last_seen"] = when
        life.ended = True
        self.ended[key] = when
        inode = life.values.get("inode")
        if inode is not None and self.live.get(inode) == key:
            del self.live[inode]

    # -- DNS -------------------------------------------------------------------------

    def _take_dns(self) -> None:
        if self.dns_source is None:
            return
        for rec in self.dns_source():
            row = dns_row(rec)
            row["container_id"] = self._process_of(row["pid"]).get("container_id")
            self.pending_dns.append(row)

    # -- flushing --------------------------------------------------------------------

    def flush(self) -> int:
        """Write the lives that began, changed or ended since the last flush (and the
        unchanged ones last written REFRESH_SECONDS ago), then the DNS rows; forget the
        ended lives. Returns the rows written."""
        live = self._dump(Collection(state=self.state), info=True) if self.conns else {}
        now = self.clock()
        with self.lock:
            for inode, key in self.live.items():
                got = live.get(inode)
                if got is not None:
                    _update(self.conns[key], got[2], self.last_poll)
            for pkey in self.live_pids.values():
                self.procs[pkey].values["last_seen"] = self.last_poll
            conns = self._due(self.conns, now)
            procs = self._due(self.procs, now)
            dns, self.pending_dns = self.pending_dns, []
        for recorded, rows in ((CONNECTIONS, conns), (PROCESSES, procs), (DNS_QUERIES, dns)):
            if rows:
                self.store.write(recorded, _columns(recorded.column_names, rows))
        return len(conns) + len(procs) + len(dns)

    @staticmethod
    def _due(lives: dict[Any, Life], now: float) -> list[dict[str, Any]]:
        out = []
        for key in list(lives):
            life = lives[key]
            sig = life.changes()
            if life.written is None or sig != life.signature or \
                    now - life.written >= REFRESH_SECONDS:
                out.append(dict(life.values))
                life.written, life.signature = now, sig
            if life.ended:
                del lives[key]
        return out

    # -- running ---------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Poll and flush until ``stop`` is set; then flush once more."""
        watcher = threading.Thread(target=self._watch_destroyed, args=(stop,), daemon=True,
                                   name="netsql-record-destroy")
        watcher.start()
        why = self.watch_processes()
        if why is not None:
            self._error(f"{why}: processes are recorded by polling /proc only")
        next_flush = time.monotonic() + self.flush_seconds
        while not stop.is_set():
            used = time.thread_time()
            try:
                self.poll()
                # Keep within the CPU budget: a host with many namespaces and sockets
                # (the kernel walks every socket once per namespace) is polled less
                # often, never more often than poll_seconds.
                used = time.thread_time() - used
                self.interval = max(self.poll_seconds, used / CPU_BUDGET)
                if time.monotonic() >= next_flush:
                    self.flush()
                    self.store.retain()
                    self.store.compact()
                    next_flush = time.monotonic() + self.flush_seconds
            except Exception as exc:  # a bad pass (a full disk, say) must not end it
                self._error(f"recording: {type(exc).__name__}: {exc}")
            stop.wait(self.interval)
        if self.proc_watch is not None:
            self.proc_watch.stop()
            self.proc_watch = None
        self.flush()
        for sock in self.diag_socks.values():
            sock.close()
        self.diag_socks.clear()

    def _watch_destroyed(self, stop: threading.Event) -> None:
        """Destroy notifications of every namespace (namespaces that appear later are
        joined at the next pass)."""
        socks: dict[int, Any] = {}
        buf = bytearray(1 << 16)
        next_scan = 0.0
        try:
            while not stop.is_set():
                try:
                    if time.monotonic() >= next_scan:
                        self._join_namespaces(socks)
                        self.watching.set()
                        next_scan = time.monotonic() + 2.0
                    self._read_destroyed(socks, buf)
                except OSError as exc:  # a namespace went away under us: rejoin
                    self._error(f"destroy notifications: {exc}")
                    next_scan = 0.0
                    stop.wait(0.5)
        finally:
            for sock in socks.values():
                sock.close()

    def _read_destroyed(self, socks: dict[int, Any], buf: bytearray) -> None:
        ready, _, _ = select.select(list(socks.values()), [], [], 0.5)
        for sock in ready:
            ns = next(n for n, s in socks.items() if s is sock)
            try:
                n = sock.recv_into(buf)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.overruns += 1  # notifications came faster than we read them
                continue
            out: list[Any] = []
            sockdiag.parse(buf, n, out)
            now = self.clock()
            for row in out:
                self.destroyed(ns, "tcp" if row[10] is not None else "udp", row, now)

    def _join_namespaces(self, socks: dict[int, Any]) -> None:
        own = procfs.own_netns()
        present = procfs.namespaces(Collection())
        for ns in set(socks) - set(present):
            socks.pop(ns).close()
        for ns, handle in present.items():
            if ns not in socks:
                try:
                    socks[ns] = sockdiag.destroy_socket(None if ns == own else handle)
                except OSError as exc:
                    self._error(f"destroy notifications in namespace {ns}: {exc}")

    def _error(self, message: str) -> None:
        if message not in self.errors:
            self.errors.append(message)


def _key(ns: int, proto: str, row: Any) -> ConnKey:
    return (ns, proto, row[0], row[4], row[2], row[5], row[3])


def _counters(values: dict[str, Any], row: Any) -> None:
    tcp = row[10]
    if tcp is not None:
        values["bytes_sent"], values["bytes_received"] = tcp[0], tcp[2]


def _update(life: Life, row: Any, now: float) -> None:
    values = life.values
    values["last_seen"] = now
    if values["protocol"] == "tcp":
        values["state"] = _TCP_STATE.get(row[1], str(row[1]))
    _counters(values, row)


def _rows(cols: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(cols)
    return [dict(zip(names, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]


def _columns(names: list[str], rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {n: [r.get(n) for r in rows] for n in names}


def dns_row(rec: Any) -> dict[str, Any]:
    """A recorded dns_queries row from a tracker record."""
    row = {name: getattr(rec, name, None) for name in DNS_QUERIES.column_names}
    rtt = getattr(rec, "rtt", None)
    row["rtt_ms"] = None if rtt is None else rtt * 1000.0
    return row


class DnsFeed:
    """The DNS transactions a capture's tracker finished since the last call: answered
    ones at once, unanswered ones once ``settle`` seconds passed without a response.
    Only the newest records are looked at (the tracker keeps them in arrival order), so
    a call costs what arrived since the last one, not the whole buffer."""

    def __init__(self, tracker: Any, settle: float = 5.0) -> None:
        self.tracker = tracker
        self.settle = settle
        self.taken: dict[tuple[Any, ...], float] = {}
        self.horizon = 0.0  # records older than this were all taken or given up on

    def __call__(self) -> list[Any]:
        now = time.time()
        out = []
        records = self.tracker.snapshot()
        # Under a flood the buffer may evict a record before its settle time: the
        # oldest half of a buffer more than half full is taken as it stands.
        capacity = getattr(self.tracker, "capacity", 0) or len(records) * 2
        at_risk = len(records) - capacity // 2
        for i in range(len(records) - 1, -1, -1):
            rec = records[i]
            if rec.ts < self.horizon:
                break
            if rec.status == "unanswered" and now - rec.ts < self.settle and i >= at_risk:
                continue
            key = (rec.ts, rec.client_address, rec.client_port, rec.trans_id, rec.query,
                   rec.qtype, getattr(rec, "net_namespace", None))
            if key not in self.taken:
                self.taken[key] = rec.ts
                out.append(rec)
        self.horizon = now - self.settle
        for key in [k for k, ts in self.taken.items() if ts < self.horizon - 60]:
            del self.taken[key]
        out.reverse()
        return out

