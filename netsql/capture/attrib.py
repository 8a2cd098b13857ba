"""Which process sent a captured DNS query: looked up the moment the packet is seen.

The kernel's own socket lookup (sock_diag, exact 4-tuple) names the socket's inode
and uid in microseconds; the inode's owner is then found by scanning /proc/*/fd,
the newest processes first (a short-lived ``getent``/``dig`` is among the newest),
stopping at the first hit. Names are kept after the process exits. Work runs in its
own thread so a burst of queries never stalls the capture loop; a batch shares one
fd scan.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from netsql import sockdiag
from netsql.capture.tracker import DnsRecord

Owner = tuple[int, str | None]  # pid, name


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().decode("utf-8", "backslashreplace").rstrip("\n")
    except OSError:
        return None


def newest_pids() -> list[int]:
    try:
        return sorted((int(n) for n in os.listdir("/proc") if n.isdigit()), reverse=True)
    except OSError:
        return []


def scan_for(inodes: set[int], hint: list[int], limit: int | None = None) -> dict[int, Owner]:
    """Owners of ``inodes``: pids in ``hint`` first, then every pid (or the ``limit``
    newest), newest first."""
    found: dict[int, Owner] = {}
    want = set(inodes)
    seen: set[int] = set()
    everyone = newest_pids()
    if limit is not None:
        everyone = everyone[:limit]
    for pid in [*hint, *everyone]:
        if pid in seen:
            continue
        seen.add(pid)
        base = f"/proc/{pid}/fd/"
        try:
            fds = os.listdir(base)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(base + fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in want:
                    found[inode] = (pid, _comm(pid))
                    want.discard(inode)
        if not want:
            break
    return found


class Attributor:
    """Fills ``pid``, ``process``, ``uid`` and ``forwarder`` of query records."""

    def __init__(self, is_local: Callable[[str], bool], dns_ports: set[int],
                 max_queue: int = 10_000) -> None:
        self.is_local = is_local
        self.dns_ports = dns_ports
        self.queue: queue.Queue[tuple[DnsRecord, int | None] | None] = queue.Queue(max_queue)
        self.sync_limit = 2000
        self._early: dict[tuple[str, str, int, str, int], tuple[float, tuple[int, int]]] = {}
        self._window = 0.0
        self._sync_count = 0
        self._held_window = 0.0
        self._held_count = 0
        self.recent: OrderedDict[int, None] = OrderedDict()  # pids that asked lately
        self.inode_owner: OrderedDict[int, Owner] = OrderedDict()
        self.server_pids: dict[int, bool] = {}
        self.skipped = 0  # queue full: left unattributed
        self.missed = 0  # socket or owner gone before we looked
        self._local = threading.local()  # one sock_diag socket per thread and family
        self._all_diag: list[socket.socket] = []
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="netsql-attrib", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.queue.put(None)
            self._thread.join(timeout=2)
            self._thread = None
        for s in self._all_diag:
            s.close()
        self._all_diag.clear()

    def submit(self, rec: DnsRecord) -> None:
        """Called by the capture thread the moment a query is seen.

        The socket lookup and a scan of the newest processes run right here: a
        short-lived client (getent, dig) may exit a millisecond after its answer,
        sooner than another thread is sure to be scheduled. Anything slower (a full
        /proc scan) goes to the attribution thread. Under a flood (more than
        ``sync_limit`` queries a second) everything goes to the thread.
        """
        if not self.is_local(rec.client_address):
            return
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window, self._sync_count = now, 0
        self._sync_count += 1
        if self._sync_count <= self.sync_limit:
            inode = self._find(rec)
            if inode is None:
                return
            owner = self.inode_owner.get(inode)
            if owner is None:
                owner = scan_for({inode}, list(reversed(self.recent)), limit=64).get(inode)
                if owner is not None:
                    self._remember(inode, owner)
            if owner is not None:
                self._name(rec, owner)
                return
            item: tuple[DnsRecord, int | None] = (rec, inode)
        else:
            item = (rec, None)
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.skipped += 1

    def prefetch(self, transport: str, client: str, cport: int, server: str,
                 sport: int) -> None:
        """Look the sending socket up now, before the packet is even decoded as DNS
        (every microsecond counts against a client that exits at once)."""
        key = (transport, client, cport, server, sport)
        if self._fresh(key) is None:
            self._keep(key, self._lookup(*key))

    def held(self, packet: bytes, uid: int | None) -> None:
        """A locally sent query the kernel holds for us (see hold.py): find its sender
        completely, socket and process, before the packet is let go."""
        from netsql.capture.packets import decode_frame

        now = time.monotonic()
        if now - self._held_window >= 1.0:
            self._held_window, self._held_count = now, 0
        self._held_count += 1
        if self._held_count > self.sync_limit:
            return  # a flood: let packets go at once; the capture path still tries
        info = decode_frame(101, packet)
        if info is None:
            return
        src, dst, sport, dport, transport, payload, _, _ = info
        if dport not in self.dns_ports or not payload:
            return
        key = (transport, src, sport, dst, dport)
        hit = self._lookup(*key)
        self._keep(key, hit)
        if hit is not None and hit[0] not in self.inode_owner:
            owner = scan_for({hit[0]}, list(reversed(self.recent))).get(hit[0])
            if owner is not None:
                self._remember(hit[0], owner)
                self._note_recent(owner[0])

    def _lookup(self, transport: str, client: str, cport: int, server: str,
                sport: int) -> tuple[int, int] | None:
        family = socket.AF_INET6 if ":" in client else socket.AF_INET
        proto = socket.IPPROTO_TCP if transport == "tcp" else socket.IPPROTO_UDP
        try:
            hit = sockdiag.find(self._diag(family), family, proto, (client, cport),
                                (server, sport))
        except OSError:
            return None
        if hit is None or not hit[9]:
            return None
        return hit[9], hit[8]  # inode, uid

    def _find(self, rec: DnsRecord) -> int | None:
        """The inode of the socket that sent ``rec`` (uid noted), or None when gone."""
        key = (rec.transport, rec.client_address, rec.client_port, rec.server_address,
               rec.server_port)
        hit = self._fresh(key)
        if hit is None:
            hit = self._lookup(*key)
        if hit is None:
            self.missed += 1
            return None
        rec.uid = hit[1]
        return hit[0]

    def _keep(self, key: tuple[str, str, int, str, int], hit: tuple[int, int] | None) -> None:
        """Remember an early lookup. Not consumed by the first query that uses it: one
        socket often sends two queries at once (glibc's A and AAAA)."""
        if hit is None:
            return
        self._early[key] = (time.monotonic(), hit)
        while len(self._early) > 4096:
            self._early.pop(next(iter(self._early)))

    def _fresh(self, key: tuple[str, str, int, str, int]) -> tuple[int, int] | None:
        """An early lookup of ``key`` from the last two seconds (ports get reused)."""
        entry = self._early.get(key)
        if entry is None or time.monotonic() - entry[0] > 2.0:
            return None
        return entry[1]

    def _diag(self, family: int) -> socket.socket:
        """This thread's sock_diag socket (netlink replies must not cross threads)."""
        socks: dict[int, socket.socket] | None = getattr(self._local, "socks", None)
        if socks is None:
            socks = self._local.socks = {}
        s = socks.get(family)
        if s is None:
            s = socks[family] = sockdiag.open_socket()
            self._all_diag.append(s)
        return s

    def _remember(self, inode: int, owner: Owner) -> None:
        self.inode_owner[inode] = owner
        while len(self.inode_owner) > 50_000:
            self.inode_owner.popitem(last=False)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            batch = [item]
            while True:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            recs = [r for r in batch if r is not None]
            if recs:
                self.attribute(recs)
            if None in batch:
                return

    def attribute(self, items: list[tuple[DnsRecord, int | None]]) -> None:
        """Owners for queued records (one full fd scan for the batch)."""
        inodes: dict[int, list[DnsRecord]] = {}
        for rec, inode in items:
            if inode is None:
                inode = self._find(rec)
                if inode is None:
                    continue
            owner = self.inode_owner.get(inode)
            if owner is not None:
                self._name(rec, owner)
            else:
                inodes.setdefault(inode, []).append(rec)
        if not inodes:
            return
        owners = scan_for(set(inodes), list(reversed(self.recent)))
        for inode, waiting in inodes.items():
            owner = owners.get(inode)
            if owner is None:
                self.missed += len(waiting)
                continue
            self._remember(inode, owner)
            for rec in waiting:
                self._name(rec, owner)

    def _note_recent(self, pid: int) -> None:
        self.recent[pid] = None
        self.recent.move_to_end(pid)
        while len(self.recent) > 256:
            self.recent.popitem(last=False)

    def _name(self, rec: DnsRecord, owner: Owner) -> None:
        rec.pid, rec.process = owner
        self._note_recent(owner[0])
        rec.forwarder = self._serves_dns(owner[0])

    def _serves_dns(self, pid: int) -> bool:
        """True when ``pid`` itself listens on a DNS port: a stub/forwarder's own query."""
        if pid not in self.server_pids:
            servers = self._dns_listeners()
            self.server_pids[pid] = any(i in servers for i in scan_inodes(pid))
        return self.server_pids[pid]

    def _dns_listeners(self) -> set[int]:
        """Inodes of sockets that listen (TCP) or wait unconnected (UDP) on a DNS port."""
        found: set[int] = set()
        states = (1 << 7) | (1 << 10)  # TCP_CLOSE (unconnected UDP), TCP_LISTEN
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                diag = self._diag(family)
                for proto in (socket.IPPROTO_UDP, socket.IPPROTO_TCP):
                    for row in sockdiag.rows(diag, family, proto, states=states):
                        if row[2] in self.dns_ports:  # local port
                            found.add(row[9])  # inode
            except OSError:
                continue
        return found


def scan_inodes(pid: int) -> list[int]:
    base = f"/proc/{pid}/fd/"
    out = []
    try:
        for fd in os.listdir(base):
            try:
                target = os.readlink(base + fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                out.append(int(target[8:-1]))
    except OSError:
        pass
    return out
