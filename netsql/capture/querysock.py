"""A captured DNS query's sending socket, looked up with sock_diag in the network
namespace the packet was seen in (attrib.py then finds the process holding it): the
exact 4-tuple lookup, the early lookups kept two seconds for the queries that follow,
and whether a process serves DNS itself (holds a socket listening on a DNS port).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from netsql import sockdiag
from netsql.capture.nsset import DiagSockets
from netsql.capture.owners import scan_inodes
from netsql.capture.tracker import DnsRecord

#: network namespace, transport, client, client port, server, server port
Key = tuple[int | None, str, str, int, str, int]
Hit = tuple[int, int, int | None]  # inode, uid, cgroup id


def key_of(rec: DnsRecord) -> Key:
    return (rec.net_namespace, rec.transport, rec.client_address, rec.client_port,
            rec.server_address, rec.server_port)


class QuerySockets:
    """sock_diag lookups by namespace (``own``: netsql's; ``handle_of``: a handle to
    enter another, nsset.CaptureSet.handle_of)."""

    def __init__(self, own: int | None, handle_of: Callable[[int | None], str | None],
                 dns_ports: set[int]) -> None:
        self.dns_ports = dns_ports
        self.diags = DiagSockets(own, handle_of)
        self._early: dict[Key, tuple[float, Hit]] = {}
        self.server_pids: dict[int, bool] = {}

    def lookup(self, key: Key) -> Hit | None:
        ns, transport, client, cport, server, sport = key
        family = socket.AF_INET6 if ":" in client else socket.AF_INET
        proto = socket.IPPROTO_TCP if transport == "tcp" else socket.IPPROTO_UDP
        try:
            cgroup: list[int | None] = []
            hit = sockdiag.find(self.diag(family, ns), family, proto, (client, cport),
                                (server, sport), cgroup)
        except OSError:
            return None
        if hit is None or not hit[9]:
            return None
        return hit[9], hit[8], cgroup[0] if cgroup else None  # inode, uid, cgroup

    def keep(self, key: Key, hit: Hit | None) -> None:
        """Remember an early lookup. Not consumed by the first query that uses it: one
        socket often sends two queries at once (glibc's A and AAAA)."""
        if hit is None:
            return
        self._early[key] = (time.monotonic(), hit)
        while len(self._early) > 4096:
            self._early.pop(next(iter(self._early)))

    def fresh(self, key: Key) -> Hit | None:
        """An early lookup of ``key`` from the last two seconds (ports get reused)."""
        entry = self._early.get(key)
        if entry is None or time.monotonic() - entry[0] > 2.0:
            return None
        return entry[1]

    def diag(self, family: int, ns: int | None) -> socket.socket:
        return self.diags.get(family, ns)

    def warm(self, ns: int | None) -> None:
        """Open this thread's sock_diag sockets of namespace ``ns`` now."""
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                self.diag(family, ns)
            except OSError:
                return

    def serves_dns(self, pid: int, ns: int | None) -> bool:
        """True when ``pid`` itself listens on a DNS port (in namespace ``ns``): a
        stub/forwarder's own query."""
        if pid not in self.server_pids:
            servers = self._dns_listeners(ns)
            self.server_pids[pid] = any(i in servers for i in scan_inodes(pid))
        return self.server_pids[pid]

    def _dns_listeners(self, ns: int | None) -> set[int]:
        """Inodes of sockets that listen (TCP) or wait unconnected (UDP) on a DNS port."""
        found: set[int] = set()
        states = (1 << 7) | (1 << 10)  # TCP_CLOSE (unconnected UDP), TCP_LISTEN
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                diag = self.diag(family, ns)
                for proto in (socket.IPPROTO_UDP, socket.IPPROTO_TCP):
                    for row in sockdiag.rows(diag, family, proto, states=states):
                        if row[2] in self.dns_ports:  # local port
                            found.add(row[9])  # inode
            except OSError:
                continue
        return found
