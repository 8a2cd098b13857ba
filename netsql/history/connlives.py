"""The recorder's connection lives (recorder.Recorder's half that reads sock_diag and
the kernel watcher's reports; docs/history.md says what each case can show)."""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from netsql import netns, procfs, sockdiag
from netsql.collect import Collection, State
from netsql.history import flowid
from netsql.history.lives import (
    CONNECTED,
    TCP_STATE,
    ConnKey,
    Life,
    conn_key,
    counters,
    process_facts,
    update,
    wire_key,
)

#: How long an ended connection is remembered (its destroy notification can come a
#: FIN_WAIT2 timeout, 60 s by default, after its owner closed it).
ENDED_MEMORY = 180.0
#: Connection starts and ends seen on the wire but not yet matched to a life, at most
#: (a SYN flood evicts the oldest: their connections are then dated by the polls).
MAX_EDGES = 65536
#: Connections whose FIN left asked about per poll, at most (a sock_diag lookup each).
CONFIRMS = 1000
#: Seconds between whole reads of /proc for namespaces (namespaces()).
NS_RESCAN = 30.0
#: How long a start or an end seen on the wire waits for its connection to be found.
EDGE_MEMORY = 600.0


class ConnectionLives:
    """Connection lives, from polls, lookups and the kernel's reports. Its state is
    the Recorder's fields (a dataclass): declared here for the type checker."""

    conns: dict[ConnKey, Life]
    procs: dict[tuple[int, float], Life]
    live: dict[int, ConnKey]
    live_pids: dict[int, tuple[int, float]]
    ended: dict[ConnKey, float]
    udp_live: set[int]
    unnamed: set[int]
    closing: dict[ConnKey, float]
    starts: OrderedDict[ConnKey, float]
    stops: OrderedDict[ConnKey, float]
    edges_evicted: int
    diag_socks: dict[int, Any]
    ns_scanned: float
    ns_known: dict[int, str]
    names: Callable[[int, str], str | None] | None
    clock: Callable[[], float]
    lock: threading.Lock
    state: State
    errors: list[str]
    last_poll: float

    if TYPE_CHECKING:
        def _begin(self, facts: list[dict[str, Any]], now: float,
                   exec_: bool = False) -> None: ...

    def _poll_connections(self, coll: Collection, now: float,
                          protos: tuple[str, ...] = ("tcp", "udp")) -> None:
        """New connections get a life (and their owner looked up); lives whose socket is
        gone end. A held socket is known by its inode, so a poll costs a dump without
        tcp_info and two set differences of integers, not work per connection; counters
        and states are taken at flush time (and from destroy notifications)."""
        with self.lock:
            before = set(self.udp_live) if protos == ("udp",) else \
                {i for i, k in self.live.items() if k[1] in protos}
        dumped: set[int] = set()
        present: set[int] = set()
        seen = self._dump(coll, info=False, protos=protos, dumped=dumped,
                          present_out=present)
        now = max(now, self.clock())  # what the dump saw was there by then
        with self.lock:
            # (membership tests, not set operations on the 10,000s of live keys)
            fresh = {i for i in seen if i not in self.live}
            unnamed = {i for i in self.unnamed if i in seen}
            self.unnamed -= unnamed
        owners = procfs.socket_owners(coll, expect=fresh | unnamed) \
            if fresh or unnamed else None
        with self.lock:
            # Gone: not in a namespace read whole, or its namespace is gone.
            for inode in [i for i in before if i in self.live and i not in seen
                          and (self.live[i][0] in dumped or self.live[i][0] not in present)]:
                key = self.live.pop(inode)
                self.udp_live.discard(inode)
                self._end_connection(key, self.conns[key], now)
            for inode in fresh:
                ns, proto, row = seen[inode]
                key = conn_key(ns, proto, row)
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
        """End the connections of ``closing`` whose socket the owner closed. Each is
        asked about once (a socket still held after its FIN is half-closed: the poll or
        the destroy notification that sees it go ends it), at most CONFIRMS a pass."""
        with self.lock:
            todo = list(itertools.islice(self.closing.items(), CONFIRMS))
            for key, _ in todo:
                del self.closing[key]
        now = self.clock()
        for key, _ in todo:
            ns, _, family, local, lport, remote, rport = key
            sock = self.diag_socks.get(ns)
            if sock is None:
                continue
            try:
                row = sockdiag.find(sock, family, 6, (local, lport), (remote, rport))
            except OSError:
                continue
            # Gone, orphaned (closed by its owner: no inode), or in TIME_WAIT or CLOSE.
            if row is None or not row[9] or row[1] in (6, 7):
                with self.lock:
                    life = self.conns.get(key)
                    if life is not None and not life.ended:
                        self._end_connection(key, life, now)

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

    def _dump(self, coll: Collection, info: bool, protos: tuple[str, ...] = ("tcp", "udp"),
              dumped: set[int] | None = None, present_out: set[int] | None = None
              ) -> dict[int, tuple[int, str, Any]]:
        """Every connected TCP and UDP socket an owner holds, of every namespace, by
        inode: (namespace, protocol, sock_diag row). A TCP socket its owner closed
        (orphaned: no inode) or in TIME_WAIT has ended. ``dumped`` gets the namespaces
        read whole (a connection of another is not gone for being absent), and
        ``present_out`` every namespace there is."""
        seen: dict[int, tuple[int, str, Any]] = {}
        own = procfs.own_netns()
        present = self.namespaces()
        if present_out is not None:
            present_out.update(present)
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
                        rows = sockdiag.rows(sock, family, 6, states=CONNECTED, info=info)
                        seen.update((r[9], (ns, "tcp", r)) for r in rows if r[9])
                    if "udp" in protos:
                        rows = sockdiag.rows(sock, family, 17)
                        seen.update((r[9], (ns, "udp", r)) for r in rows
                                    if r[5] is not None and r[9])
                if dumped is not None:
                    dumped.add(ns)
            except OSError as exc:
                self._error(f"sock_diag in namespace {ns}: {exc}")
                socks.pop(ns).close()
        return seen

    def _connection(self, key: ConnKey, row: Any, now: float,
                    pid: int | None) -> dict[str, Any]:
        """A new life's values; its first_seen is its SYN's when one was seen."""
        ns, proto, family, local, lport, remote, rport = key
        first = self.starts.pop(wire_key(key), None) if proto == "tcp" else None
        values = {
            # A destroyed socket (no inode) no longer tells its owner's uid.
            "first_seen": first if first is not None and first <= now else now,
            "last_seen": now, "uid": row[8] if row[9] else None, "protocol": proto,
            "family": "ipv4" if family == 2 else "ipv6", "local_address": local,
            "local_port": lport, "remote_address": remote, "remote_port": rport,
            "net_namespace": ns, "inode": row[9] or None,
            "community_id": flowid.community_id(proto, local, lport, remote, rport),
            "state": TCP_STATE.get(row[1]) if proto == "tcp" else "ESTABLISHED",
        }
        self._name(values, pid)
        if self.names is not None:
            values["remote_host"] = self.names(ns, remote)
        counters(values, row)
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
        key = conn_key(ns, proto, row)
        with self.lock:
            life = self.conns.get(key)
            if key in self.ended:  # the owner had closed it: keep its end, take counters
                if life is not None and life.ended:
                    counters(life.values, row)
                return
            if life is None:  # it lived between two polls
                life = self.conns[key] = Life(self._connection(key, row, when, None))
            update(life, row, when)
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
        key = conn_key(ns, "tcp", row)
        pid = owner[0] if owner else None
        if owner is not None:
            with self.lock:
                known = self._process_of(pid).get("name")
            if known != owner[1]:
                facts = process_facts(Collection(state=self.state), {owner[0]})
                with self.lock:
                    self._begin(facts, when, exec_=True)
        with self.lock:
            if key in self.conns or key in self.ended:
                return
            self.starts.setdefault(wire_key(key), when)
            self.conns[key] = Life(self._connection(key, row, self.clock(), pid))
            self.live[row[9]] = key
            if pid is None:
                self.unnamed.add(row[9])

    def error(self, message: str) -> None:
        self._error(message)

    def _end_connection(self, key: ConnKey, life: Life, when: float) -> None:
        stop = self.stops.pop(wire_key(key), None) if key[1] == "tcp" else None
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

    def _error(self, message: str) -> None:
        if message not in self.errors:
            self.errors.append(message)
