"""Live capture in every network namespace: one set of packet sockets per namespace.

Each namespace's sockets (DNS: live.LiveCapture; UDP/ICMP flows: flowcap.FlowCapture)
are opened by a short-lived thread that entered it (netns.call_in), and stay bound to
it; each reader reports which namespace its packets were seen in. A monitor thread
looks for namespaces every ``TICK`` seconds: new ones are captured (within two
seconds of appearing), gone ones closed (an open socket would keep a dead namespace
alive).

Namespaces are found without stat()ing every process's ns/net at each look:
- the kernel's process events (procevents.ProcWatch) keep each process's namespace
  (a fork inherits its parent's, an exec re-reads it: containers and `ip netns exec`
  enter their namespace just before exec);
- /run/netns is listed at every look (`ip netns add` makes namespaces without any
  process);
- all of /proc is read every ``RESCAN`` seconds, for a process that entered a new
  namespace without exec (unshare(2) in a running program); without process events
  (not root), every ``RESCAN_BLIND`` seconds.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from netsql import netns
from netsql.capture.flowcap import FlowCapture
from netsql.capture.live import CaptureError, LiveCapture

#: Seconds between looks for new and gone namespaces.
TICK = 0.5
#: Seconds between full reads of /proc when process events keep the list, and when
#: they do not (not root): still within two seconds of a namespace's first process.
RESCAN = 30.0
RESCAN_BLIND = 1.5
#: Seconds before a namespace whose capture could not open is tried again.
RETRY = 5.0
#: Bytes of the packet ring (live.Ring, allocated up front in kernel memory) of
#: netsql's own namespace and of each namespace --netns names; every other namespace
#: gets ``SMALL_RING``, since 30 namespaces at 32 MiB would pin ~1 GiB. 4 MiB is 128
#: blocks of 32 KiB: at a low rate (a block handed over every 2 ms) 256 ms of
#: traffic, at a flood ~23,000 DNS packets (docs/dns.md).
RING = 32 << 20
SMALL_RING = 4 << 20

#: on_packet(ts, ip packet, interface, local, ns=namespace): live.LiveCapture's
#: callback, told the namespace.
OnPacket = Callable[..., None]
#: hold(namespace, handle) -> (the started hold or None, why not)
HoldFactory = Callable[[int, "str | None"], "tuple[Any, str | None]"]
#: on_ring(namespace) -> the LiveCapture ``on_ring`` of that namespace's sockets
RingFactory = Callable[[int], Callable[[Any], int]]


def own_netns() -> int | None:
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return None


def _scan_proc() -> dict[int, str]:
    """Every namespace a process is in -> /proc/PID/ns/net of one such process."""
    found: dict[int, str] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        path = f"/proc/{name}/ns/net"
        try:
            ino = os.stat(path).st_ino
        except OSError:
            continue
        found.setdefault(ino, path)
    return found


class Namespaces:
    """The network namespaces that exist now, each with a handle to enter it (None:
    netsql's own). See the module's docstring for how they are found."""

    def __init__(self, procs: Any | None, rescan: float = RESCAN) -> None:
        self.procs = procs  # procevents.ProcWatch (running), or None
        self.rescan = rescan
        self._full: dict[int, str] = {}
        self._last_full = float("-inf")
        self.full_scans = 0

    def current(self) -> dict[int, str | None]:
        found: dict[int, str | None] = {}
        own = own_netns()
        if own is not None:
            found[own] = None
        for ino, (_name, path) in netns.named().items():
            found.setdefault(ino, path)
        now = time.monotonic()
        every = self.rescan if self.procs is not None else RESCAN_BLIND
        fresh = now - self._last_full >= every
        if fresh:
            self._full, self._last_full = _scan_proc(), now
            self.full_scans += 1
        known: dict[int, str] = {}
        alive: Any = None
        if self.procs is not None and not fresh:
            with self.procs.lock:
                for p in self.procs.alive.values():
                    if p.netns is not None and p.netns not in known:
                        known[p.netns] = f"/proc/{p.pid}/ns/net"
                alive = set(self.procs.alive)
        # Those of the last full read stay until the next one (entered without exec, or
        # no process events at all), unless the events saw the process found in it exit.
        for ino, path in self._full.items():
            if alive is None or int(path.split("/")[2]) in alive:
                known.setdefault(ino, path)
        for ino, path in known.items():
            found.setdefault(ino, path)
        return found


@dataclass
class Part:
    """One namespace's capture."""

    netns: int
    handle: str | None
    interfaces: list[str] | None
    live: LiveCapture
    flows: FlowCapture | None = None
    hold: Any = None
    hold_error: str | None = None
    closed: float | None = None  # when the namespace was seen gone


@dataclass
class Failed:
    """A namespace whose capture could not open (retried every RETRY seconds)."""

    netns: int
    error: str | None  # None: it has none of the -i interfaces (not an error)
    at: float = field(default_factory=time.monotonic)


class CaptureSet:
    """The per-namespace captures of one live capture, and the monitor that keeps the
    set in step with the namespaces of the host.

    ``only``: capture just these namespaces (inodes; --netns). ``interfaces``: names
    looked up in each namespace when its capture opens (-i); a namespace with none of
    them is not captured."""

    def __init__(self, on_packet: OnPacket, interfaces: Sequence[str] | None,
                 ports: Sequence[int], only: Collection[int] | None = None,
                 procs: Any | None = None, hold: HoldFactory | None = None,
                 flows: bool = True, tick: float = TICK,
                 on_gone: Callable[[int], None] | None = None,
                 on_ring: RingFactory | None = None,
                 on_start: Callable[[int], None] | None = None) -> None:
        self.on_packet = on_packet
        self.on_start = on_start  # (namespace) -> None, first in its capture thread
        self.on_ring = on_ring  # given: each namespace's sockets read through rings
        self.interfaces = list(interfaces) if interfaces else None
        self.ports = list(ports)
        self.only = frozenset(only) if only is not None else None
        self.namespaces = Namespaces(procs)
        self.hold = hold
        self.with_flows = flows
        self.tick = tick
        self.on_gone = on_gone
        self.parts: dict[int, Part] = {}
        self.gone: deque[Part] = deque(maxlen=256)  # closed namespaces' counters
        self.failed: dict[int, Failed] = {}
        self.lock = threading.RLock()
        self.monitor_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life --------------------------------------------------------------------------
    def open(self) -> None:
        """Open the capture of every namespace there is now (raises CaptureError when
        none could be opened: no CAP_NET_RAW, no such interface or namespace)."""
        found = self._wanted(self.namespaces.current())
        if self.only is not None and not found:
            raise CaptureError("no such network namespace: " + ", ".join(
                map(str, sorted(self.only))))
        own = own_netns()
        for ino in sorted(found, key=lambda n: n != own):  # our own first: its error wins
            self._open(ino, found[ino], fatal=ino == own)
        if not self.parts:
            errors = [f.error for f in self.failed.values() if f.error]
            raise CaptureError(errors[0] if errors else "no such interface: "
                               + ", ".join(self.interfaces or []))

    def start(self) -> None:
        """Start the readers and the monitor."""
        with self.lock:
            for part in self.parts.values():
                self._start(part)
        self._stop.clear()
        self._thread = threading.Thread(target=self._monitor, name="netsql-netns",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop every capture (their counters and flows stay readable)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self.lock:
            parts = list(self.parts.values())
        for part in parts:
            _stop_part(part)

    @property
    def running(self) -> bool:
        with self.lock:
            return any(p.live.running for p in self.parts.values())

    def handle_of(self, ino: int | None) -> str | None:
        """A handle to enter namespace ``ino`` (None: netsql's own, or unknown)."""
        if ino is None:
            return None
        with self.lock:
            part = self.parts.get(ino)
        return part.handle if part is not None else None

    def failures(self) -> list[Failed]:
        """Namespaces whose capture could not open (not those without the -i
        interfaces)."""
        return [f for f in list(self.failed.values()) if f.error]

    def all_parts(self) -> list[Part]:
        """Namespaces captured now, then those closed since (newest last)."""
        with self.lock:
            return [*self.parts.values(), *self.gone]

    # -- opening and closing -----------------------------------------------------------
    def _wanted(self, found: dict[int, str | None]) -> dict[int, str | None]:
        if self.only is None:
            return found
        return {k: v for k, v in found.items() if k in self.only}

    def _open(self, ino: int, handle: str | None, fatal: bool = False) -> Part | None:
        """Open the sockets of namespace ``ino``; the Part, or None (then ``failed``
        says why, or the namespace has none of the -i interfaces)."""
        expect = ino if handle is not None else None
        try:
            names = self.interfaces
            if names is not None:
                present = netns.call_in(handle, _interface_names, expect=expect)
                names = [n for n in names if n in present]
                if not names:
                    self.failed[ino] = Failed(ino, None)
                    return None
            live = LiveCapture(partial(self.on_packet, ns=ino), names, self.ports,
                               rcvbuf=self.ring_size(ino),
                               on_ring=self.on_ring(ino) if self.on_ring else None,
                               on_start=partial(self.on_start, ino) if self.on_start
                               else None)
            netns.call_in(handle, live.open, expect=expect)
        except CaptureError as exc:
            if fatal:
                raise
            self.failed[ino] = Failed(ino, str(exc))
            return None
        except OSError as exc:  # gone meanwhile, or cannot be entered (not root)
            self.failed[ino] = Failed(ino, f"cannot enter network namespace {ino}: "
                                      f"{exc.strerror or exc}")
            return None
        part = Part(ino, handle, names, live)
        with self.lock:
            self.parts[ino] = part  # recorded before anything starts: stop undoes it
        self.failed.pop(ino, None)
        if self.with_flows:
            flows = FlowCapture(names, exclude_ports=self.ports, netns=ino)
            try:
                netns.call_in(handle, flows.open, expect=expect)
                part.flows = flows
            except OSError:
                flows.stop()
        if self.hold is not None:
            part.hold, part.hold_error = self.hold(ino, handle)
        return part

    def ring_size(self, ino: int) -> int:
        """The ring (and receive buffer) of namespace ``ino``: RING for netsql's own
        and those --netns named, SMALL_RING for the rest."""
        if self.only is not None or ino == own_netns():
            return RING
        return SMALL_RING

    @staticmethod
    def _start(part: Part) -> None:
        part.live.start()
        if part.flows is not None:
            part.flows.start()

    def _close(self, ino: int) -> None:
        with self.lock:
            part = self.parts.pop(ino, None)
        if part is None:
            return
        _stop_part(part)
        part.closed = time.time()
        with self.lock:
            self.gone.append(part)
        if self.on_gone is not None:
            self.on_gone(ino)

    # -- the monitor -------------------------------------------------------------------
    def _monitor(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.step()
            except Exception as exc:  # the capture goes on with the namespaces it has
                self.monitor_error = f"{type(exc).__name__}: {exc}"

    def step(self) -> None:
        """One look: open new namespaces, close gone ones."""
        found = self._wanted(self.namespaces.current())
        with self.lock:
            have = set(self.parts)
        for ino in have - found.keys():
            self._close(ino)
        now = time.monotonic()
        for ino in [i for i in self.failed if i not in found]:
            del self.failed[ino]
        for ino, handle in found.items():
            if ino in have or self._stop.is_set():
                continue
            failed = self.failed.get(ino)
            if failed is not None and now - failed.at < RETRY:
                continue
            part = self._open(ino, handle)
            if part is not None:
                if self._stop.is_set():  # stop() raced this open: undo it
                    _stop_part(part)
                    return
                self._start(part)


def _interface_names() -> set[str]:
    """The interface names of the calling thread's namespace."""
    return {name for _, name in socket.if_nameindex()}


def _stop_part(part: Part) -> None:
    if part.hold is not None:
        part.hold.stop()
    part.live.stop()
    if part.flows is not None:
        part.flows.stop()


class DiagSockets:
    """sock_diag sockets by (thread, namespace, family), for attribution: netlink
    replies must not cross threads, and each namespace has its own sockets (opened
    inside it; closed when it goes away, since they would keep it alive)."""

    def __init__(self, own: int | None, handle_of: Callable[[int | None], str | None]
                 ) -> None:
        self.own = own
        self.handle_of = handle_of
        self.socks: dict[tuple[int, int | None, int], socket.socket] = {}
        self.lock = threading.Lock()

    def get(self, family: int, ns: int | None) -> socket.socket:
        """This thread's socket in namespace ``ns`` (OSError when it cannot be
        entered, or is not captured)."""
        from netsql import sockdiag

        key = (threading.get_ident(), ns, family)
        s = self.socks.get(key)
        if s is None:
            handle = None if ns is None or ns == self.own else self.handle_of(ns)
            if handle is None and ns is not None and ns != self.own:
                raise OSError(f"network namespace {ns} is not captured")
            s = netns.call_in(handle, sockdiag.open_socket,
                              expect=ns if handle is not None else None)
            with self.lock:
                self.socks[key] = s
        return s

    def forget(self, ns: int) -> None:
        with self.lock:
            socks = [self.socks.pop(k) for k in [k for k in self.socks if k[1] == ns]]
        for s in socks:
            s.close()

    def close(self) -> None:
        with self.lock:
            socks, self.socks = list(self.socks.values()), {}
        for s in socks:
            s.close()
