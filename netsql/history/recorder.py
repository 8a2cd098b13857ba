"""The recorder behind `netsql serve --record DIR`: connection lives, process lives and
DNS transactions, flushed to the history tree (store.py) every ``flush_seconds``.

How each is seen (docs/history.md says what each case can and cannot show):
- connections: a sock_diag dump of each network namespace (connected UDP sockets every
  ``poll_seconds``, TCP as often as the CPU budget allows); a connection is one life
  from the first poll or notification that shows it to the one that shows it gone.
  What the kernel reports as it happens (kernelwatch.py, root) dates them: a TCP
  connection's SYN on the wire is its first_seen, its FIN or RST its last_seen, and a
  local connect is looked up (with its process) the moment its SYN leaves; the destroy
  notifications add the connections that lived between two polls, with their last
  counters. The owning process is looked up when a connection is first seen.
- processes: every poll lists /proc; a process life runs from its start time to the
  first poll that finds it gone (``exited`` from a process event source, when one is
  given, ends it at once and adds the ones that lived between polls).
- dns_queries: the transactions a capture finished (answered, or given up on).

A life still going is written again at each flush with its newest values; the
history views keep the newest observation of each.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from netsql import netns, procfs, sockdiag
from netsql.backends import linux_procs
from netsql.collect import Collection, Need, State
from netsql.history import flowid
from netsql.history.kernelwatch import KernelWatch
from netsql.history.store import Store
from netsql.history.tables import CONNECTIONS, DNS_QUERIES, PROCESSES

_TCP_STATE = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1",
              5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK",
              10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}
#: TCP states a connection can be in while its owner holds it (not LISTEN, TIME_WAIT,
#: CLOSE, NEW_SYN_RECV), as sock_diag's state mask.
_CONNECTED = sum(1 << st for st in (1, 2, 3, 4, 5, 8, 9, 11))
#: The share of a core each kind of poll may use (the TCP dumps; the processes and UDP
#: dumps): a poll that costs more makes the next one of its kind wait longer. TCP
#: connections are dated by their SYN and FIN on the wire (kernelwatch.py), so a TCP
#: poll only finds what began before the recorder or was not seen on the wire.
CPU_BUDGET = 0.01
#: A life still going whose values did not change is written again after this long.
REFRESH_SECONDS = 600.0
_PROCESS_FACTS = frozenset({"pid", "ppid", "name", "path", "cmdline", "uid", "start_time",
                            "net_namespace", "container_id"})
#: How long an ended connection is remembered (its destroy notification can come a
#: FIN_WAIT2 timeout, 60 s by default, after its owner closed it).
ENDED_MEMORY = 180.0
#: A connection's key: namespace, protocol, family, local and remote address and port.
ConnKey = tuple[int, str, int, str, int, str, int]
#: Connection starts and ends seen on the wire but not yet matched to a life, at most
#: (a SYN flood evicts the oldest: their connections are then dated by the polls).
MAX_EDGES = 65536
#: Seconds between whole reads of /proc for namespaces (namespaces()).
NS_RESCAN = 30.0
#: How long a start or an end seen on the wire waits for its connection to be found.
EDGE_MEMORY = 600.0


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
    #: The shortest spacing of TCP dumps (None: poll_seconds); the CPU budget may make
    #: it longer.
    tcp_poll_seconds: float | None = None
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
    #: Held by a poll or a flush's dump (sock_diag sockets are not shared).
    polling: threading.Lock = field(default_factory=threading.Lock)
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
    #: CPU budget allows), and between TCP dumps.
    interval: float = 1.0
    tcp_interval: float = 1.0
    #: The process event source (capture.procevents.ProcWatch) while it runs.
    proc_watch: Any = None
    #: One sock_diag socket per namespace, kept open between polls.
    diag_socks: dict[int, Any] = field(default_factory=dict)
    #: Destroy notifications and TCP starts and ends, as they happen (run()).
    kernel: KernelWatch = field(init=False)
    #: TCP starts (SYN) and ends (FIN, RST) seen on the wire, by connection key, until
    #: a poll, a lookup or a notification finds their connection.
    starts: OrderedDict[ConnKey, float] = field(default_factory=OrderedDict)
    stops: OrderedDict[ConnKey, float] = field(default_factory=OrderedDict)
    #: Starts and ends forgotten before their connection was found (MAX_EDGES).
    edges_evicted: int = 0
    #: The inodes of ``live`` that are UDP (a UDP-only poll looks at these alone).
    udp_live: set[int] = field(default_factory=set)
    #: When /proc was last read whole for namespaces (namespaces()).
    ns_scanned: float = 0.0
    ns_known: dict[int, str] = field(default_factory=dict)
    #: Inodes of connections found at their SYN whose owner is left to the next poll.
    unnamed: set[int] = field(default_factory=set)
    #: Live connections whose FIN or RST left, by key -> when: each poll asks the
    #: kernel whether their socket is closed (gone, or no longer held), and ends them at
    #: that segment, whatever the TCP polls' spacing and even if the kernel's destroy
    #: notification is lost.
    closing: dict[ConnKey, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kernel = KernelWatch(self, clock=self.clock)

    @property
    def watching(self) -> threading.Event:
        """Set once destroy notifications are being received in every namespace."""
        return self.kernel.watching

    # -- polling ---------------------------------------------------------------------

    def poll(self, tcp: bool = True) -> None:
        """One pass: processes, then connections (whose owners it names): UDP, and TCP
        when ``tcp``. /proc and sock_diag are read outside the lock, so the kernel
        watcher (a connect's lookup, a destroy) never waits for a slow pass."""
        with self.polling:  # one pass at a time (serve's statements poll too)
            now = self.clock()
            coll = Collection(state=self.state)
            with self.lock:
                before = set(self.live_pids)
            alive = set(procfs.pids_of(coll))
            with self.lock:
                new = alive - self.live_pids.keys()
            facts = self._facts(coll, new) if new else []
            with self.lock:
                self._begin(facts, now)
                # (not those the process events began since /proc was listed)
                for pid in (before & self.live_pids.keys()) - alive:
                    self._end_process(self.procs[self.live_pids.pop(pid)], now)
            self._poll_connections(coll, now, ("tcp", "udp") if tcp else ("udp",))
            self._confirm_ends()
            with self.lock:
                self._take_dns()

    @staticmethod
    def _facts(coll: Collection, pids: set[int]) -> list[dict[str, Any]]:
        # The native reader whatever NETSQL_BACKEND says: the recorder is Linux's
        # (sock_diag), and its process lives carry the namespace and container.
        return _rows(linux_procs.processes(coll, Need(_PROCESS_FACTS, frozenset(pids))))

    def _begin(self, facts: list[dict[str, Any]], now: float, exec_: bool = False) -> None:
        for row in facts:
            key = (row["pid"], row["start_time"])
            old = self.live_pids.get(row["pid"])
            if old is not None and old != key:  # the pid was reused: that life ended
                self._end_process(self.procs[old], now)
            life = self.procs.get(key)
            if life is None:
                self.procs[key] = Life(dict(row, last_seen=now))
            elif exec_:  # the same process runs a new program: its newest facts
                life.values.update(row)
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
        facts = self._facts(Collection(state=self.state), {pid})
        with self.lock:
            self._begin(facts, self._wall(ts_ns), exec_=True)

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

    def _poll_connections(self, coll: Collection, now: float,
                          protos: tuple[str, ...] = ("tcp", "udp")) -> None:
        """New connections get a life (and their owner looked up); lives whose socket is
        gone end. A held socket is known by its inode, so a poll costs a dump without
        tcp_info and two set differences of integers, not work per connection; counters
        and states are taken at flush time (and from destroy notifications)."""
        with self.lock:
            before = set(self.udp_live) if protos == ("udp",) else \
                {i for i, k in self.live.items() if k[1] in protos}
        seen = self._dump(coll, info=False, protos=protos)
        now = max(now, self.clock())  # what the dump saw was there by then
        with self.lock:
            # (membership tests, not set operations on the 10,000s of live keys)
            fresh = {i for i in seen if i not in self.live}
            unnamed = {i for i in self.unnamed if i in seen}
            self.unnamed -= unnamed
        owners = procfs.socket_owners(coll, expect=fresh | unnamed) \
            if fresh or unnamed else None
        with self.lock:
            for inode in [i for i in before if i in self.live and i not in seen]:
                key = self.live.pop(inode)
                self.udp_live.discard(inode)
                self._end_connection(key, self.conns[key], now)
            for inode in fresh:
                ns, proto, row = seen[inode]
                key = _key(ns, proto, row)
                if inode in self.live or key in self.ended or key in self.conns:
                    continue  # found by the watcher meanwhile, ended, or a reused tuple
                owner = owners.first.get(inode) if owners is not None else None
                self.conns[key] = Life(self._connection(key, row, now,
                                                        owner[0] if owner else None))
                self.live[inode] = key
                if proto == "udp":
                    self.udp_live.add(inode)
            for inode in unnamed:
                owner = owners.first.get(inode) if owners is not None else None
                held = self.live.get(inode)
                if owner is not None and held is not None:
                    self._name(self.conns[held].values, owner[0])
            self._forget(now)
            self.last_poll = now

    def _confirm_ends(self) -> None:
        """End the connections of ``closing`` whose socket the owner closed."""
        with self.lock:
            todo = list(self.closing.items())
        now = self.clock()
        for key, when in todo:
            ns, _, family, local, lport, remote, rport = key
            sock = self.diag_socks.get(ns)
            if sock is None:
                continue
            try:
                row = sockdiag.find(sock, family, 6, (local, lport), (remote, rport))
            except OSError:
                continue
            # Gone, orphaned (closed by its owner: no inode), or in TIME_WAIT or CLOSE.
            closed = row is None or not row[9] or row[1] in (6, 7)
            with self.lock:
                life = self.conns.get(key)
                if life is None or life.ended:
                    self.closing.pop(key, None)
                elif closed:
                    self.closing.pop(key, None)
                    self._end_connection(key, life, now)
                elif now - when > ENDED_MEMORY:  # a half-closed socket still held
                    self.closing.pop(key, None)

    def namespaces(self) -> dict[int, str]:
        """Every network namespace -> a handle to enter it: each live process's
        namespace as its life (or its last exec) recorded it, and `ip netns`'s names,
        so a poll costs no readlink per process; /proc is read whole every
        NS_RESCAN seconds (a process that changed namespace without an exec)."""
        if time.monotonic() - self.ns_scanned >= NS_RESCAN:
            self.ns_known = procfs.namespaces(Collection())
            self.ns_scanned = time.monotonic()
        own = procfs.own_netns()
        found = {own: "/proc/self/ns/net"} if own is not None else {}
        with self.lock:
            for pid, key in self.live_pids.items():
                ns = self.procs[key].values.get("net_namespace")
                if ns is not None and ns not in found:
                    found[ns] = f"/proc/{pid}/ns/net"
        for ns, (_name, handle) in netns.named().items():
            found.setdefault(ns, handle)
        for ns, handle in self.ns_known.items():
            found.setdefault(ns, handle)
        return found

    def _forget(self, now: float) -> None:
        for key in [k for k, t in self.ended.items() if t < now - ENDED_MEMORY]:
            del self.ended[key]
        for edges in (self.starts, self.stops):
            while edges and next(iter(edges.values())) < now - EDGE_MEMORY:
                edges.popitem(last=False)

    def _dump(self, coll: Collection, info: bool, protos: tuple[str, ...] = ("tcp", "udp")
              ) -> dict[int, tuple[int, str, Any]]:
        """Every connected TCP and UDP socket an owner holds, of every namespace, by
        inode: (namespace, protocol, sock_diag row). A TCP socket its owner closed
        (orphaned: no inode) or in TIME_WAIT has ended."""
        seen: dict[int, tuple[int, str, Any]] = {}
        own = procfs.own_netns()
        present = self.namespaces()
        socks = self.diag_socks
        for ns in socks.keys() - present.keys():
            socks.pop(ns).close()
        for ns, handle in present.items():
            sock = socks.get(ns)
            if sock is None:  # kept open across polls: no thread or setns per poll
                try:
                    sock = socks[ns] = sockdiag.open_socket(
                        None if ns == own else handle, expect=None if ns == own else ns)
                except OSError:
                    continue
            try:
                for family in (2, 10):
                    if "tcp" in protos:
                        rows = sockdiag.rows(sock, family, 6, states=_CONNECTED, info=info)
                        seen.update((r[9], (ns, "tcp", r)) for r in rows if r[9])
                    if "udp" in protos:
                        rows = sockdiag.rows(sock, family, 17)
                        seen.update((r[9], (ns, "udp", r)) for r in rows
                                    if r[5] is not None and r[9])
            except OSError as exc:
                self._error(f"sock_diag in namespace {ns}: {exc}")
                socks.pop(ns).close()
        return seen

    def _connection(self, key: ConnKey, row: Any, now: float,
                    pid: int | None) -> dict[str, Any]:
        """A new life's values; its first_seen is its SYN's when one was seen."""
        ns, proto, family, local, lport, remote, rport = key
        first = self.starts.pop(_wire_key(key), None) if proto == "tcp" else None
        values = {
            # A destroyed socket (no inode) no longer tells its owner's uid.
            "first_seen": first if first is not None and first <= now else now,
            "last_seen": now, "uid": row[8] if row[9] else None, "protocol": proto,
            "family": "ipv4" if family == 2 else "ipv6", "local_address": local,
            "local_port": lport, "remote_address": remote, "remote_port": rport,
            "net_namespace": ns, "inode": row[9] or None,
            "community_id": flowid.community_id(proto, local, lport, remote, rport),
            "state": _TCP_STATE.get(row[1]) if proto == "tcp" else "ESTABLISHED",
        }
        self._name(values, pid)
        if self.names is not None:
            values["remote_host"] = self.names(ns, remote)
        _counters(values, row)
        return values

    def _name(self, values: dict[str, Any], pid: int | None) -> None:
        proc = self._process_of(pid)
        values.update(pid=pid, process=proc.get("name"), path=proc.get("path"),
                      container_id=proc.get("container_id"))

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

    # -- TCP starts and ends on the wire (kernelwatch.py) ------------------------------

    def edge(self, ns: int, edge: Any, when: float) -> bool:
        """A SYN, FIN or RST seen in ``ns``: remember when. True for a local connect not
        known yet (the watcher then looks its socket up at once)."""
        key = (ns, "tcp", edge.family, edge.local, edge.lport, edge.remote, edge.rport)
        with self.lock:
            edges = self.starts if edge.start else self.stops
            life = self.conns.get(key)
            if life is not None and self._redate(life, edge.start, when):
                return False
            if edge.start:
                self.stops.pop(key, None)  # a new connection on a reused 4-tuple
            elif key in edges:
                return False  # the first FIN or RST is the end; retransmits are not
            elif life is not None:
                self.closing[key] = when
            edges[key] = when
            edges.move_to_end(key)
            if len(edges) > MAX_EDGES:
                edges.popitem(last=False)
                self.edges_evicted += 1
            return edge.start and edge.outgoing and key not in self.conns

    @staticmethod
    def _redate(life: Life, start: bool, when: float) -> bool:
        """A poll or notification that found the connection before its SYN or FIN was
        read: date it by the segment. True when ``life`` is that connection's."""
        values = life.values
        if start and not life.ended and when <= values["first_seen"]:
            values["first_seen"] = when
            return True
        if not start and life.ended and values["first_seen"] <= when <= values["last_seen"]:
            values["last_seen"] = when
            return True
        return False

    def candidates(self, ns: int, uid: int | None) -> list[int]:
        """The live processes of namespace ``ns`` and user ``uid``, newest first: where a
        connecting socket's owner is looked for."""
        with self.lock:
            mine = [(life.values.get("start_time") or 0, pid)
                    for pid, key in self.live_pids.items()
                    if (life := self.procs[key]).values.get("net_namespace") == ns
                    and (uid is None or life.values.get("uid") == uid)]
        return [pid for _, pid in sorted(mine, reverse=True)]

    def connected(self, ns: int, edge: Any, row: Any, owner: tuple[int, str | None] | None,
                  when: float) -> None:
        """The socket of a local connect, found when its SYN left: a life from then.
        ``owner``: its pid and name (read from /proc as it was found: a table that has
        not seen the process's exec yet is brought up to date first)."""
        key = _key(ns, "tcp", row)
        pid = owner[0] if owner else None
        if owner is not None:
            with self.lock:
                known = self._process_of(pid).get("name")
            if known != owner[1]:
                facts = self._facts(Collection(state=self.state), {owner[0]})
                with self.lock:
                    self._begin(facts, when, exec_=True)
        with self.lock:
            if key in self.conns or key in self.ended:
                return
            self.starts.setdefault(_wire_key(key), when)
            self.conns[key] = Life(self._connection(key, row, self.clock(), pid))
            self.live[row[9]] = key
            if pid is None:
                self.unnamed.add(row[9])

    def error(self, message: str) -> None:
        self._error(message)

    def _end_connection(self, key: ConnKey, life: Life, when: float) -> None:
        stop = self.stops.pop(_wire_key(key), None) if key[1] == "tcp" else None
        if stop is not None and life.values["first_seen"] <= stop < when:
            when = stop  # its FIN or RST left or came before a poll or notification
        self.closing.pop(key, None)
        life.values["state"] = "CLOSED"
        life.values["last_seen"] = when
        life.ended = True
        self.ended[key] = when
        inode = life.values.get("inode")
        if inode is not None and self.live.get(inode) == key:
            del self.live[inode]
            self.udp_live.discard(inode)

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
        with self.polling:
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
        watcher = threading.Thread(target=self.kernel.run, args=(stop,), daemon=True,
                                   name="netsql-record-kernel")
        watcher.start()
        why = self.watch_processes()
        if why is not None:
            self._error(f"{why}: processes are recorded by polling /proc only")
        next_flush = time.monotonic() + self.flush_seconds
        next_tcp = 0.0
        startup = True  # every process and connection is new once: not a poll's cost
        while not stop.is_set():
            used = time.thread_time()
            try:
                tcp = time.monotonic() >= next_tcp
                self.poll(tcp)
                # Keep within the CPU budget: a host with many namespaces and sockets
                # (the kernel walks every socket once per namespace) is polled less
                # often, never more often than poll_seconds.
                used = time.thread_time() - used
                if startup:
                    startup = False
                    next_tcp = time.monotonic() + self.poll_seconds
                elif tcp:
                    self.tcp_interval = max(self.tcp_poll_seconds or self.poll_seconds,
                                            used / CPU_BUDGET)
                    next_tcp = time.monotonic() + self.tcp_interval
                else:
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
        with self.polling:
            for sock in self.diag_socks.values():
                sock.close()
            self.diag_socks.clear()

    def _error(self, message: str) -> None:
        if message not in self.errors:
            self.errors.append(message)


def _key(ns: int, proto: str, row: Any) -> ConnKey:
    return (ns, proto, row[0], row[4], row[2], row[5], row[3])


def _wire_key(key: ConnKey) -> ConnKey:
    """A connection's key as its packets show it: an IPv6 socket connected to an IPv4
    address (::ffff:a.b.c.d) sends IPv4."""
    ns, proto, family, local, lport, remote, rport = key
    if family == 10 and local.startswith("::ffff:") and remote.startswith("::ffff:"):
        return (ns, proto, 2, local[7:], lport, remote[7:], rport)
    return key


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
    Each record has a sequence number in the tracker's buffer: a call asks only for the
    records from the oldest one not yet decided, so it costs what arrived since, not
    the whole buffer (100,000 records made each second cost a fifth of a core)."""

    def __init__(self, tracker: Any, settle: float = 5.0) -> None:
        self.tracker = tracker
        self.settle = settle
        self.next = 0  # records before this one were all taken (or evicted)
        self.taken: set[int] = set()  # taken records from ``next`` on

    def __call__(self) -> list[Any]:
        now = time.time()
        first, records = self.tracker.since(self.next)
        tail = first + len(records)
        # Under a flood the buffer may evict a record before its settle time: the
        # oldest half of a buffer more than half full is taken as it stands.
        capacity = getattr(self.tracker, "capacity", 0) or len(records) * 2
        safe_from = tail - capacity // 2
        out = []
        undecided = tail
        for seq, rec in enumerate(records, first):
            if seq in self.taken:
                continue
            if rec.status == "unanswered" and now - rec.ts < self.settle and \
                    seq >= safe_from:
                undecided = min(undecided, seq)
                continue
            self.taken.add(seq)
            out.append(rec)
        self.next = undecided
        self.taken = {s for s in self.taken if s >= undecided}
        return out
