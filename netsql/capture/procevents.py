"""The kernel's process events (netlink proc connector): fork, exec, uid change, exit.

Root only (CAP_NET_ADMIN). The kernel multicasts one message per event, stamped with
its own monotonic clock (``time.monotonic_ns()``'s), so netsql knows which processes
were alive at a packet's instant and which exited right after it, without polling
``/proc``. Only processes (thread group leaders) are tracked, not threads.

The connector answers only in the initial network namespace: when netsql runs in
another one, its socket is opened from a short-lived thread that entered the
namespace of pid 1 (the socket stays there).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from netsql import netns
from netsql.capture import bpf

NETLINK_CONNECTOR = 11
CN_IDX_PROC = CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN, PROC_CN_MCAST_IGNORE = 1, 2
PROC_EVENT_FORK, PROC_EVENT_EXEC, PROC_EVENT_UID = 0x1, 0x2, 0x4
PROC_EVENT_COMM, PROC_EVENT_EXIT = 0x200, 0x80000000
NLMSG_DONE = 3

_NLHDR = struct.Struct("=IHHII")
_CNMSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_EVHDR = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
_FOUR = struct.Struct("=IIII")
_OFF = _NLHDR.size + _CNMSG.size


@dataclass(slots=True)
class Proc:
    pid: int
    uid: int | None
    comm: str | None
    born_ns: int  # monotonic ns (0: running before netsql started watching)
    netns: int | None  # network namespace inode (None: not known)
    cgroup: str | None = None  # cgroup v2 path, read at exec (None: not read)
    exit_ns: int | None = None


class ProcEventsError(OSError):
    pass


def _open() -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        # Only what ProcWatch.feed reads: a host's threads come and go far more often
        # than its processes, and each event woke this thread. While other work made
        # processes and threads on the 2-core VM, the thread took 0.16-0.25 s of CPU
        # in a 12 s capture that saw no packet; 0.04 s with the filter.
        bpf.attach(s, bpf.proc_events_filter(PROC_EVENT_FORK, (
            PROC_EVENT_EXEC, PROC_EVENT_UID, PROC_EVENT_COMM, PROC_EVENT_EXIT)))
        s.bind((0, CN_IDX_PROC))
        body = struct.pack("=I", PROC_CN_MCAST_LISTEN)
        cn = _CNMSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(body), 0) + body
        s.send(_NLHDR.pack(_NLHDR.size + len(cn), NLMSG_DONE, 0, 0, 0) + cn)
    except BaseException:
        s.close()
        raise
    return s


def open_socket() -> socket.socket:
    """A subscribed proc connector socket, in the initial network namespace.

    That namespace is the one of kthreadd (pid 2) or init (pid 1); their ``ns/net``
    may be unreadable in a container, then the parents of this process are tried."""
    try:
        return _open()
    except ConnectionRefusedError:  # not the initial network namespace
        pass
    here = _ns_inode(os.getpid())
    tried = {here}
    pid = os.getppid()
    for cand in (2, 1, *_ancestors(pid)):
        ino = _ns_inode(cand)
        if ino is None or ino in tried:
            continue
        tried.add(ino)
        try:
            return netns.call_in(f"/proc/{cand}/ns/net", _open)
        except OSError:
            continue
    raise ConnectionRefusedError(111, "the proc connector answers only in the initial "
                                 "network namespace, which netsql cannot enter")


def _ns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _ancestors(pid: int) -> list[int]:
    out: list[int] = []
    while pid > 2 and len(out) < 16:
        out.append(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                pid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def in_initial_pid_namespace() -> bool:
    """Whether this /proc is the initial pid namespace's: pid 2 is kthreadd there."""
    if read_comm(2) != "kthreadd":
        return False
    try:
        return os.stat("/proc/2/ns/pid").st_ino == os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return True  # pid 2 is kthreadd but its ns link is unreadable (a container's /proc)


def read_comm(pid: int) -> str | None:
    # os.open/read, not open(): a third of the time (the hold names each query with it)
    try:
        fd = os.open(f"/proc/{pid}/comm", os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 64).decode("utf-8", "backslashreplace").rstrip("\n")
    except OSError:
        return None
    finally:
        os.close(fd)


def _uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def netns_of(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def unified_cgroup(pid: int) -> str | None:
    """The cgroup v2 path of ``pid`` ('/user.slice/...'), None when unknown."""
    try:
        with open(f"/proc/{pid}/cgroup", "rb") as f:
            for line in f:
                if line.startswith(b"0::"):
                    return line[3:].rstrip(b"\n").decode("utf-8", "replace")
    except OSError:
        pass
    return None


def cgroup_id(path: str) -> int | None:
    """The id the kernel gives a cgroup v2 path (INET_DIAG_CGROUP_ID's value)."""
    try:
        return os.stat("/sys/fs/cgroup" + path).st_ino
    except OSError:
        return None


class ProcWatch:
    """Processes alive now and those that exited lately (bounded), from kernel events.

    ``alive`` maps pid -> Proc for running processes (seeded from /proc at start,
    newest last); ``exited`` keeps the last ``keep_exited`` exits, oldest first.
    """

    def __init__(self, keep_exited: int = 4096,
                 netns: int | frozenset[int] | None = None,
                 on_exec: Callable[[int, int], None] | None = None,
                 on_exit: Callable[[int, int], None] | None = None) -> None:
        #: Names are read only for the processes of this namespace (or these; None: all).
        self.netns = netns
        #: Called (pid, monotonic ns) in the event thread after an exec or an exit.
        self.on_exec, self.on_exit = on_exec, on_exit
        self.alive: OrderedDict[int, Proc] = OrderedDict()
        self.exited: OrderedDict[int, Proc] = OrderedDict()
        self.keep_exited = keep_exited
        self.lock = threading.Lock()
        self.events = 0
        self.lost = 0  # receive buffer overruns (events missed)
        self.error: str | None = None
        self.sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Subscribe, then seed from /proc (so nothing falls between); raises
        ProcEventsError when the kernel refuses (not root, no connector) or would send
        nothing (netsql in a pid namespace of its own: the kernel ignores listeners
        there, and its pids would not be this /proc's anyway)."""
        if not in_initial_pid_namespace():
            raise ProcEventsError(1, "process events: not in the initial pid namespace")
        try:
            self.sock = open_socket()
        except OSError as exc:
            raise ProcEventsError(exc.errno, f"process events: {exc.strerror or exc}") from None
        self.sock.settimeout(0.2)
        self._seed()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="netsql-procevents",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _seed(self) -> None:
        try:
            pids = sorted(int(n) for n in os.listdir("/proc") if n.isdigit())
        except OSError:
            return
        with self.lock:
            for pid in pids:
                if pid not in self.alive:
                    self.alive[pid] = Proc(pid, _uid_of(pid), None, 0, netns_of(pid))

    def _run(self) -> None:
        assert self.sock is not None
        sock = self.sock
        while not self._stop.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    return
                if exc.errno == 105:  # ENOBUFS: events were lost; the table may be stale
                    self.lost += 1
                    continue
                self.error = str(exc)
                return
            self.feed(data)

    def feed(self, data: bytes) -> None:
        """Take one netlink datagram of events."""
        off = 0
        while off + _OFF + _EVHDR.size <= len(data):
            length = _NLHDR.unpack_from(data, off)[0]
            if length < _OFF:
                return
            what, _, ts = _EVHDR.unpack_from(data, off + _OFF)
            body = off + _OFF + _EVHDR.size
            self.events += 1
            if what == PROC_EVENT_FORK:
                _, _, child, child_tgid = _FOUR.unpack_from(data, body)
                if child == child_tgid:
                    self._fork(child, _FOUR.unpack_from(data, body)[1], ts)
            elif what == PROC_EVENT_EXEC:
                pid, tgid = struct.unpack_from("=II", data, body)
                if pid == tgid:
                    self._exec(pid, ts)
                    if self.on_exec is not None:
                        self.on_exec(pid, ts)
            elif what == PROC_EVENT_UID:
                pid, tgid, _, euid = _FOUR.unpack_from(data, body)
                if pid == tgid:
                    with self.lock:
                        p = self.alive.get(pid)
                        if p is not None:
                            p.uid = euid
            elif what == PROC_EVENT_COMM:
                pid, tgid = struct.unpack_from("=II", data, body)
                if pid == tgid:
                    comm = data[body + 8:body + 24].split(b"\0", 1)[0]
                    with self.lock:
                        p = self.alive.get(pid)
                        if p is not None:
                            p.comm = comm.decode("utf-8", "backslashreplace")
            elif what == PROC_EVENT_EXIT:
                pid, tgid = struct.unpack_from("=II", data, body)
                if pid == tgid:
                    self._exit(pid, ts)
                    if self.on_exit is not None:
                        self.on_exit(pid, ts)
            off += (length + 3) & ~3

    def _fork(self, pid: int, parent: int, ts: int) -> None:
        with self.lock:
            up = self.alive.get(parent)
            if up is not None:
                p = Proc(pid, up.uid, up.comm, ts, up.netns, up.cgroup)
            else:
                p = Proc(pid, _uid_of(pid), None, ts, netns_of(pid))
            self.alive.pop(pid, None)
            self.alive[pid] = p

    def _exec(self, pid: int, ts: int) -> None:
        # At once: a short-lived client may be gone in a millisecond. `ip netns exec`
        # and containers enter their namespace just before exec.
        # Name and cgroup only of those in the watched namespace (the candidates): a busy
        # host execs thousands of processes a second elsewhere.
        netns = netns_of(pid)
        comm = cgroup = None
        if self._watched(netns):
            comm, cgroup = read_comm(pid), unified_cgroup(pid)
        with self.lock:
            p = self.alive.get(pid)
            if p is None:
                p = self.alive[pid] = Proc(pid, _uid_of(pid), comm, ts, netns)
            # Unreadable (gone already): unknown, never the name before exec.
            p.comm, p.netns, p.cgroup = comm, netns, cgroup

    def _watched(self, netns: int | None) -> bool:
        if self.netns is None or netns is None:
            return True
        if isinstance(self.netns, frozenset):
            return netns in self.netns
        return netns == self.netns

    def _exit(self, pid: int, ts: int) -> None:
        known = self.alive.get(pid)
        comm = None
        if known is not None and known.comm is None and self._watched(known.netns):
            comm = read_comm(pid)  # a zombie's name stays readable until it is reaped
        with self.lock:
            p = self.alive.pop(pid, None)
            if p is None:
                return
            p.exit_ns = ts
            if p.comm is None:
                p.comm = comm
            self.exited.pop(pid, None)
            self.exited[pid] = p
            while len(self.exited) > self.keep_exited:
                self.exited.popitem(last=False)

    # -- queries -----------------------------------------------------------------------
    def candidates(self, uid: int | None, netns: int | None = None,
                   limit: int = 256) -> list[int]:
        """Running pids of ``uid`` (any uid when None) in ``netns`` (or not known to be
        elsewhere), newest first, at most ``limit``."""
        with self.lock:
            out = []
            for p in reversed(self.alive.values()):
                if (uid is None or p.uid == uid) and (
                        netns is None or p.netns is None or p.netns == netns):
                    out.append(p.pid)
                    if len(out) >= limit:
                        break
            return out

    def exited_between(self, start_ns: int, end_ns: int, born_before_ns: int,
                       uid: int | None, netns: int | None = None) -> list[Proc]:
        """Processes alive at ``born_before_ns`` (of ``uid`` when known, in ``netns`` or
        not known to be elsewhere) that exited between ``start_ns`` and ``end_ns``."""
        with self.lock:
            out = []
            for p in reversed(self.exited.values()):
                assert p.exit_ns is not None
                if p.exit_ns < start_ns - 1_000_000_000:  # events of two CPUs may cross
                    break
                if start_ns <= p.exit_ns <= end_ns and p.born_ns <= born_before_ns and (
                        uid is None or p.uid == uid) and (
                        netns is None or p.netns is None or p.netns == netns):
                    out.append(p)
            return out

    def comm_of(self, pid: int) -> str | None:
        with self.lock:
            p = self.alive.get(pid) or self.exited.get(pid)
            return p.comm if p is not None else None

    def wait_idle(self, timeout: float = 0.5) -> None:
        """Wait until events already queued in the socket have been read (best effort)."""
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline and seen != self.events:
            seen = self.events
            time.sleep(0.02)
