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
from netsql.collect import Collection, Need
from netsql.history import flowid
from netsql.history.store import Store
from netsql.history.tables import CONNECTIONS, DNS_QUERIES, PROCESSES
from netsql.tables import processes

_TCP_STATE = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1",
              5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK",
              10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}
_LISTEN = 10
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
    dirty: bool = True


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
    state: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    errors: list[str] = field(default_factory=list)
    #: Connections that ended -> when: a later notification of their destruction
    #: brings their last counters, not a new life.
    ended: dict[ConnKey, float] = field(default_factory=dict)
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
        known = {pid for pid, _ in self.procs}
        new = alive - known
        if new:
            facts = processes.collect(coll, Need(_PROCESS_FACTS, frozenset(new)))
            for row in _rows(facts):
                self.procs[(row["pid"], row["start_time"])] = Life(dict(row, last_seen=now))
        for (pid, _start), life in self.procs.items():
            if life.ended:
                continue
            if pid in alive:
                life.values["last_seen"] = now
                life.dirty = True
            else:
                self._end_process(life, now)

    @staticmethod
    def _end_process(life: Life, when: float) -> None:
        life.values["end_time"] = life.values["last_seen"] = when
        life.ended = life.dirty = True

    def exited(self, pid: int, when: float) -> None:
        """A process event source saw ``pid`` exit at ``when``."""
        with self.lock:
            for (p, _start), life in self.procs.items():
                if p == pid and not life.ended:
                    self._end_process(life, when)

    def _poll_connections(self, coll: Collection, now: float) -> None:
        seen: dict[ConnKey, tuple[Any, int]] = {}
        own = procfs.own_netns()
        for ns, handle in procfs.namespaces(coll).items():
            try:
                sock = sockdiag.open_socket(None if ns == own else handle)
            except OSError:
                continue
            try:
                for family in (2, 10):
                    for row in sockdiag.rows(sock, family, 6, info=True):
                        # A socket its owner closed (orphaned: no inode) or in
                        # TIME_WAIT is a connection that ended.
                        if row[1] != _LISTEN and row[5] is not None and row[9]:
                            seen[_key(ns, "tcp", row)] = (row, ns)
                    for row in sockdiag.rows(sock, family, 17):
                        if row[5] is not None:  # connected UDP only
                            seen[_key(ns, "udp", row)] = (row, ns)
            except OSError as exc:
                self._error(f"sock_diag in namespace {ns}: {exc}")
            finally:
                sock.close()
        fresh = [k for k in seen if k not in self.conns and k not in self.ended]
        owners = procfs.socket_owners(coll, expect=[seen[k][0][9] for k in fresh]) \
            if fresh else None
        for key in fresh:
            row, ns = seen[key]
            self.conns[key] = Life(self._connection(key, row, now, owners))
        for key, life in self.conns.items():
            if life.ended:
                continue
            got = seen.get(key)
            if got is None:
                self._end_connection(key, life, now)
                continue
            _update(life, got[0], now)
        for key in [k for k, t in self.ended.items() if t < now - ENDED_MEMORY]:
            del self.ended[key]

    def _connection(self, key: ConnKey, row: Any, now: float,
                    owners: procfs.Owners | None) -> dict[str, Any]:
        ns, proto, family, local, lport, remote, rport = key
        owner = owners.first.get(row[9]) if owners is not None and row[9] else None
        pid = owner[0] if owner else None
        proc = self._process_of(pid)
        values = {
            "first_seen": now, "last_seen": now, "pid": pid, "uid": row[8],
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

    def _process_of(self, pid: int | None) -> dict[str, Any]:
        if pid is None:
            return {}
        for (p, _start), life in self.procs.items():
            if p == pid and not life.ended:
                return life.values
        return {}

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
                    life.dirty = True
                return
            if life is None:  # it lived between two polls
                life = self.conns[key] = Life(self._connection(key, row, when, None))
            _update(life, row, when)
            self._end_connection(key, life, when)

    def _end_connection(self, key: ConnKey, life: Life, when: float) -> None:
        life.values["state"] = "CLOSED"
        life.values["last_seen"] = when
        life.ended = life.dirty = True
        self.ended[key] = when

    # -- DNS -------------------------------------------------------------------------

    def _take_dns(self) -> None:
        if self.dns_source is None:
            return
        for rec in self.dns_source():
            self.pending_dns.append(dns_row(rec))

    # -- flushing --------------------------------------------------------------------

    def flush(self) -> int:
        """Write what changed since the last flush; forget ended lives once written.
        Returns the rows written."""
        with self.lock:
            conns = [life.values for life in self.conns.values() if life.dirty]
            procs = [life.values for life in self.procs.values() if life.dirty]
            dns, self.pending_dns = self.pending_dns, []
            for table in (self.conns, self.procs):
                for key in [k for k, life in table.items() if life.ended]:
                    del table[key]  # type: ignore[arg-type]
                for life in table.values():
                    life.dirty = False
        for recorded, rows in ((CONNECTIONS, conns), (PROCESSES, procs), (DNS_QUERIES, dns)):
            if rows:
                self.store.write(recorded, _columns(recorded.column_names, rows))
        return len(conns) + len(procs) + len(dns)

    # -- running ---------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Poll and flush until ``stop`` is set; then flush once more."""
        watcher = threading.Thread(target=self._watch_destroyed, args=(stop,), daemon=True,
                                   name="netsql-record-destroy")
        watcher.start()
        next_flush = time.monotonic() + self.flush_seconds
        while not stop.is_set():
            try:
                self.poll()
                if time.monotonic() >= next_flush:
                    self.flush()
                    self.store.retain()
                    self.store.compact()
                    next_flush = time.monotonic() + self.flush_seconds
            except OSError as exc:
                self._error(f"recording: {exc}")
            stop.wait(self.poll_seconds)
        self.flush()

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
    life.dirty = True


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
