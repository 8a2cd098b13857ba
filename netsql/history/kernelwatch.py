"""The recorder's second thread: what the kernel reports as it happens, in every
network namespace, between the recorder's polls.

- sock_diag destroy notifications: a TCP or UDP socket freed, with its last counters
  (``recorder.destroyed``);
- TCP connections opening and closing on the wire (capture/tcpedges.py: SYN, FIN,
  RST; ``recorder.edge``). An outgoing SYN is a local process connecting: its socket
  is looked up at once by its exact 4-tuple (the kernel's own hash lookup, not a dump)
  and its owner among the few processes of that namespace and uid, so a connection
  that lives less than a poll is recorded with its process (``recorder.connected``).

Namespaces that appear later are joined every JOIN_SECONDS; a namespace that cannot
be joined (not root) is reported once and the polls stay the fallback.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time
from typing import Any, Protocol

from netsql import procfs, sockdiag
from netsql.capture import owners, tcpedges

JOIN_SECONDS = 2.0
#: The share of a core the at-once lookups of connecting sockets' owners may use; past
#: it, a connection's owner is left to the next poll (counted in ``deferred``).
LOOKUP_BUDGET = 0.01
#: Processes tried per lookup: the newest of the socket's namespace and uid, then the
#: newest pids (a client that just started, not yet in the recorder's table).
CANDIDATES = 32
NEWEST = 32
#: A candidate with more open files than this is not scanned at once (a process with
#: 40,000 sockets costs seconds of readlink): its connections are named by the next
#: poll, which reuses what it read of each process before.
MAX_FDS = 1024


class Sink(Protocol):
    """What the watcher tells (history/recorder.py's Recorder)."""

    def destroyed(self, ns: int, proto: str, row: Any, when: float) -> None: ...
    def edge(self, ns: int, edge: tcpedges.Edge, when: float) -> bool: ...
    def candidates(self, ns: int, uid: int | None) -> list[int]: ...
    def connected(self, ns: int, edge: tcpedges.Edge, row: Any,
                  owner: tuple[int, str | None] | None, when: float) -> None: ...
    def error(self, message: str) -> None: ...
    def namespaces(self) -> dict[int, str]: ...


class KernelWatch:
    def __init__(self, sink: Sink, clock: Any = time.time) -> None:
        self.sink = sink
        self.clock = clock
        self.destroy: dict[int, socket.socket] = {}
        self.lookup: dict[int, socket.socket] = {}
        self.edges = tcpedges.EdgeSockets()
        self.hints = owners.FdHints()
        #: Times the kernel dropped destroy notifications we did not read in time.
        self.overruns = 0
        #: Connecting sockets whose owner was left to the next poll (budget spent).
        self.deferred = 0
        self._spent = 0.0  # thread CPU seconds of lookups in the current second
        self._second = 0.0
        #: Set once destroy notifications are received in every namespace.
        self.watching = threading.Event()

    def run(self, stop: threading.Event) -> None:
        buf = bytearray(1 << 16)
        next_join = 0.0
        try:
            while not stop.is_set():
                try:
                    if time.monotonic() >= next_join:
                        self._join()
                        self.watching.set()
                        next_join = time.monotonic() + JOIN_SECONDS
                    self._read(buf)
                except OSError as exc:  # a namespace went away under us: rejoin
                    self.sink.error(f"kernel notifications: {exc}")
                    next_join = 0.0
                    stop.wait(0.5)
        finally:
            for sock in [*self.destroy.values(), *self.lookup.values()]:
                sock.close()
            self.destroy.clear()
            self.lookup.clear()
            self.edges.close()

    def _join(self) -> None:
        own = procfs.own_netns()
        present = self.sink.namespaces()
        for table in (self.destroy, self.lookup):
            for ns in set(table) - set(present):
                table.pop(ns).close()
        for ns, handle in present.items():
            where = None if ns == own else handle
            for table, make in ((self.destroy, sockdiag.destroy_socket),
                                (self.lookup, sockdiag.open_socket)):
                if ns not in table:
                    try:  # (a handle's process may have moved: its inode is checked)
                        table[ns] = make(where, None if where is None else ns)
                    except OSError as exc:
                        self.sink.error(f"sock_diag in namespace {ns}: {exc}")
        self.edges.join(present, own)
        for message in self.edges.errors:
            self.sink.error(message)
        self.edges.errors.clear()

    def _read(self, buf: bytearray) -> None:
        which = {s: (ns, False) for ns, s in self.destroy.items()}
        which.update((s, (ns, True)) for ns, s in self.edges.socks.items())
        ready, _, _ = select.select(list(which), [], [], 0.5)
        for sock in ready:
            ns, edges = which[sock]
            if edges:
                for when, edge in self.edges.read(sock, buf):
                    self._edge(ns, edge, when)
                continue
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
                self.sink.destroyed(ns, "tcp" if row[10] is not None else "udp", row, now)

    def _edge(self, ns: int, edge: tcpedges.Edge, when: float) -> None:
        """Tell the recorder; a local connect it does not know yet is looked up now,
        while the connecting process still holds its socket."""
        if not self.sink.edge(ns, edge, when):
            return
        sock = self.lookup.get(ns)
        if sock is None:
            return
        now = time.monotonic()
        if now - self._second >= 1.0:
            self._second, self._spent = now, 0.0
        if self._spent >= LOOKUP_BUDGET:  # a burst of connects: the next poll finds them
            self.deferred += 1
            return
        used = time.thread_time()
        row = _find(sock, edge)
        if row is None or not row[9]:
            self._spent += time.thread_time() - used
            return  # gone already, or not a local socket (a forwarded connection)
        found = None
        if self._spent < LOOKUP_BUDGET:
            inode = row[9]
            tried = self.sink.candidates(ns, row[8])[:CANDIDATES]
            known = set(tried)
            newest = [p for p in owners.newest_pids()[:NEWEST] if p not in known]
            found = owners.scan_for({inode}, [p for p in tried + newest if _few_fds(p)],
                                    self.hints).get(inode)
        else:
            self.deferred += 1
        self._spent += time.thread_time() - used
        self.sink.connected(ns, edge, row, found, when)


def _few_fds(pid: int) -> bool:
    """Whether ``pid`` has at most MAX_FDS open files (Linux 6.2+ tells the count as
    the fd directory's size; before, 0: unknown, scanned)."""
    try:
        return os.stat(f"/proc/{pid}/fd").st_size <= MAX_FDS
    except OSError:
        return False


def _find(sock: socket.socket, edge: tcpedges.Edge) -> Any:
    """The local socket of ``edge`` (an IPv6 socket connected to an IPv4 address holds
    it as ::ffff:a.b.c.d)."""
    local, remote = (edge.local, edge.lport), (edge.remote, edge.rport)
    try:
        row = sockdiag.find(sock, edge.family, socket.IPPROTO_TCP, local, remote)
        if row is None and edge.family == socket.AF_INET:
            row = sockdiag.find(sock, socket.AF_INET6, socket.IPPROTO_TCP,
                                ("::ffff:" + edge.local, edge.lport),
                                ("::ffff:" + edge.remote, edge.rport))
    except OSError:
        return None
    return row
