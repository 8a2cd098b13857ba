"""Live capture with AF_PACKET raw sockets (Linux), filtered in the kernel by BPF.

A ``LiveCapture`` owns its sockets and one thread. Given ``on_ring``, each socket gets a
TPACKET_V3 receive ring (``Ring``: blocks of packets the kernel fills and hands over,
shared memory, no copy or system call a packet) and ``on_ring(ring)`` decodes what the
kernel handed over (livescan.py, compiled); otherwise each DNS packet it reads goes to
``on_packet(ts, ip_packet, interface, local)`` (``local``: sent by this host, or on
loopback). Cooked sockets (SOCK_DGRAM) hand over the packet from its network header on
every link type, so one decoder serves ethernet, loopback, tunnels and VLANs alike.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from netsql.capture import bpf

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
ARPHRD_LOOPBACK = 772
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35  # the kernel's receive/send time of each packet (SCM_TIMESTAMPNS)
_TIMESPEC = struct.Struct("=qq")
PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_V3 = 2
_REQ3 = struct.Struct("=7I")  # struct tpacket_req3
SIOCGIFNAME = 0x8910
_IFREQ = struct.Struct("=16si20x")  # struct ifreq: the name, then ifr_ifindex


#: Why live capture does not start off Linux (one line, for the user).
NEEDS_LINUX = ("live DNS capture needs Linux (AF_PACKET sockets); on macOS and the BSDs it "
               "would need the BPF devices (/dev/bpf*), which netsql does not read yet: "
               "capture with tcpdump and read the file with --pcap FILE")


class CaptureError(Exception):
    """Live capture cannot start (one line, for the user)."""


class Reader:
    """A packet reader's thread (its ``_run``), started and stopped by its owner."""

    def __init__(self) -> None:
        self.started: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        raise NotImplementedError

    def _spawn(self, name: str) -> None:
        self.started = time.time()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _join(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None


class Ring:
    """A packet socket's TPACKET_V3 receive ring (PACKET_RX_RING), mapped here.

    The kernel writes packets into ``nblocks`` blocks of ``block_size`` bytes and hands
    a block over when it is full or ``timeout_ms`` after its first packet, whichever
    comes first (so a lone query waits at most that long); the reader gives each block
    back (``block`` is the next one to read). ``size`` bytes in all: like a receive
    buffer, what the reader has not taken when the ring is full is dropped and counted
    by the kernel (PACKET_STATISTICS)."""

    # Small blocks: at a low rate each block is handed over after ``timeout_ms`` with a
    # few packets in it, so the ring holds nblocks * timeout_ms of traffic; with 1 MiB
    # blocks (32 of them) that was 64 ms, and a busy machine that kept the reader off
    # the CPU longer dropped packets at 17,000 a second (benchmarks/bench_live.py).
    TIMEOUT_MS = 2
    #: How long the reader waits before looking again when the traffic fills blocks
    #: faster than their timeout (``busy``). Each look costs the reader some 90 us
    #: besides the packets (the wake-up, the Python around the compiled walk): at
    #: 100,000 DNS queries a second the blocks come every 2 ms, and those looks were
    #: half the capture thread's CPU (0.74 us a packet; with this pause 0.44,
    #: benchmarks/bench_live.py). The ring holds far more than a pause's traffic
    #: (its ``nblocks`` blocks, 1,024 by default), so nothing is dropped for it; what
    #: it costs is latency, and only while that busy: a query's row, and the socket
    #: lookup of a query this host sent (passive attribution), come up to this much
    #: later. (--hold's lookups do not go through the ring.) The pause is a plain
    #: sleep, and no poll follows it: waiting on the stop event (threading's
    #: Condition, in Python) and polling again cost the loop 40-48 us a look, 0.06 s
    #: of the thread's 0.24 at 100,000 a second; now 20 us. A stop is seen after it.
    BUSY_PAUSE = 0.01

    def __init__(self, sock: socket.socket, size: int, block_size: int = 1 << 15,
                 timeout_ms: int = TIMEOUT_MS) -> None:
        self.sock = sock
        self.block_size = block_size
        self.nblocks = max(size // block_size, 4)
        frame = 1 << 11
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, _REQ3.pack(
            block_size, self.nblocks, frame, block_size // frame * self.nblocks,
            timeout_ms, 0, 0))
        self.map = mmap.mmap(sock.fileno(), block_size * self.nblocks, mmap.MAP_SHARED,
                             mmap.PROT_READ | mmap.PROT_WRITE)
        self.block = 0
        #: The reader's last pass found most blocks handed over full (set by the
        #: reader, livescan.LiveDecoder.ring): see BUSY_PAUSE.
        self.busy = False
        self.ifnames: dict[int, str] = {}  # interface index -> name (filled as seen)

    def ifname(self, index: int) -> str:
        """The name of interface ``index`` in the socket's network namespace, whatever
        the calling thread's: asked of the kernel through the socket (SIOCGIFNAME, as
        Python's recvfrom names a packet's interface), so a ring opened inside another
        namespace (nsset.py) names that namespace's interfaces, not netsql's own."""
        try:
            out = fcntl.ioctl(self.sock.fileno(), SIOCGIFNAME, _IFREQ.pack(b"", index))
        except (OSError, ValueError):
            return f"if{index}"
        return out[:16].split(b"\0", 1)[0].decode(errors="replace") or f"if{index}"

    def close(self) -> None:
        try:
            self.map.close()
        except BufferError:  # a reader still walks it (a stop that timed out): it
            pass  # is unmapped when that reader lets go


class LiveCapture(Reader):
    def __init__(self, on_packet: Callable[[float, bytes, str, bool], None],
                 interfaces: Sequence[str] | None = None, ports: Sequence[int] = (53,),
                 rcvbuf: int = 32 << 20,
                 on_ring: Callable[[Ring], int] | None = None,
                 on_start: Callable[[], None] | None = None) -> None:
        self.on_packet = on_packet
        self.on_ring = on_ring  # given: the sockets read through rings (see Ring)
        #: Called first in the capture thread (attribution opens its sock_diag sockets
        #: there before the first query, not during it).
        self.on_start = on_start
        self.rings: list[Ring] = []
        self.interfaces = list(interfaces) if interfaces else None
        self.ports = list(ports)
        self.rcvbuf = rcvbuf
        self.socks: list[socket.socket] = []
        self.packets = 0  # packets the filter let through and we read
        self.kernel_drops = 0  # packets the kernel dropped (receive buffer full)
        self.errors = 0  # frames on_packet could not use
        super().__init__()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def open(self) -> None:
        if not hasattr(socket, "AF_PACKET"):  # Linux's alone (not macOS's, not the BSDs')
            raise CaptureError(NEEDS_LINUX)
        try:
            self.socks = open_packet_sockets(self.interfaces, bpf.dns_filter(self.ports),
                                             self.rcvbuf)
            if self.on_ring is not None:
                self._open_rings()
        except PermissionError:
            raise CaptureError("live capture needs CAP_NET_RAW: run netsql as root (sudo), "
                               "or read a capture file with --pcap FILE") from None
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise CaptureError(f"no such interface: {exc.filename}") from None
            raise CaptureError(f"cannot start live capture: {exc.strerror or exc}") from None

    def _open_rings(self) -> None:
        """A ring on every socket; if one cannot be had (an old kernel, no memory for
        it), none: the sockets are read packet by packet."""
        try:
            for s in self.socks:
                self.rings.append(Ring(s, self.rcvbuf))
        except OSError:
            for r in self.rings:
                r.close()
            self.rings = []

    def start(self) -> None:
        if not self.socks:
            self.open()
        self._spawn("netsql-capture")

    def stop(self) -> None:
        self._join()
        self.stats()
        self.close()

    def close(self) -> None:
        for r in self.rings:
            r.close()
        self.rings = []
        for s in self.socks:
            s.close()
        self.socks = []

    def stats(self) -> tuple[int, int]:
        """(packets read, packets the kernel dropped) so far."""
        for s in self.socks:
            try:
                raw = s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            except OSError:
                continue
            _, drops = struct.unpack("II", raw)  # the kernel resets them on read
            self.kernel_drops += drops
        return self.packets, self.kernel_drops

    def _run(self) -> None:
        deliver = self.on_packet
        if self.on_start is not None:
            try:
                self.on_start()
            except Exception:  # only a head start: the capture runs without it
                self.errors += 1

        def take(ts: float, packet: bytes, addr: tuple[Any, ...]) -> None:
            self.packets += 1
            try:
                # A query from this host's processes leaves as PACKET_OUTGOING (or
                # crosses loopback); one arriving from elsewhere has no local sender
                # to look up, which under a flood of them would cost two netlink
                # round trips a packet.
                deliver(ts, packet, addr[0],
                        addr[2] == PACKET_OUTGOING or addr[3] == ARPHRD_LOOPBACK)
            except Exception:  # a bad packet must never end the capture
                self.errors += 1

        if not self.rings:
            packet_loop(self.socks, self._stop, take, 65536 + 256, stamps=True)
            return
        # What the sockets queued before their rings were set up: read as before (a
        # socket with a queue would also poll readable for ever).
        for s in self.socks:
            packet_loop([s], _Once(), take, 65536 + 256, stamps=True, timeout=0)
        on_ring = self.on_ring
        assert on_ring is not None
        poller = select.poll()
        for s in self.socks:
            poller.register(s, select.POLLIN)
        last = False
        while True:
            for r in self.rings:
                try:
                    self.packets += on_ring(r)
                except Exception:  # never the end of the capture
                    self.errors += 1
            if last:
                return
            if self._stop.is_set():
                # The block being filled is handed over within the ring's timeout:
                # what arrived before the stop is taken too.
                time.sleep(Ring.TIMEOUT_MS * 2 / 1000)
                last = True
                continue
            if all(r.busy for r in self.rings):
                time.sleep(Ring.BUSY_PAUSE)
                continue  # (the blocks are there by then: no poll)
            try:
                poller.poll(200)
            except OSError:
                return


class _Once(threading.Event):
    """A stop event for packet_loop that lets it read what is queued, once."""

    def __init__(self) -> None:
        super().__init__()
        self._asked = False

    def is_set(self) -> bool:
        asked, self._asked = self._asked, True
        return asked


def open_packet_sockets(interfaces: Sequence[str] | None, prog: list[bpf.Insn],
                        rcvbuf: int) -> list[socket.socket]:
    """Cooked AF_PACKET sockets with ``prog`` attached: one for every interface, or one
    bound to each of ``interfaces`` (the filter is attached before binding, so nothing
    unfiltered is queued). Non-blocking. On error none stay open; an unknown interface
    raises ENODEV with the name as ``filename``."""
    socks: list[socket.socket] = []
    try:
        names: list[str | None] = list(interfaces) if interfaces else [None]
        for name in names:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM,
                              socket.htons(ETH_P_ALL) if name is None else 0)
            socks.append(s)
            bpf.attach(s, prog)
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.setblocking(False)
            if name is not None:
                try:
                    s.bind((name, ETH_P_ALL))
                except OSError as exc:
                    raise OSError(exc.errno, exc.strerror, name) from None
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def packet_loop(socks: Sequence[socket.socket], stop: threading.Event,
                take: Callable[[float, bytes, tuple[Any, ...]], None], bufsize: int,
                stamps: bool = False, timeout: float = 0.2) -> None:
    """Read packets from ``socks`` until ``stop``; ``take(ts, packet, address)`` each.

    ``stamps``: ``ts`` is the kernel's time of the packet (when it left or arrived),
    not when it was read: attribution compares it with the kernel's process exits.

    Loopback shows every packet twice (going out, then coming in): only the incoming
    copy is taken, so nothing is counted twice."""
    buf = bytearray(bufsize)
    view = memoryview(buf)
    socks = list(socks)
    if stamps:
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    bufs = [buf]
    while not stop.is_set():
        try:
            ready, _, _ = select.select(socks, [], [], timeout)
        except (OSError, ValueError):
            return
        for s in ready:
            while True:
                try:
                    if stamps:
                        n, anc, _, addr = s.recvmsg_into(bufs, 64)
                    else:
                        n, addr = s.recvfrom_into(buf)
                except BlockingIOError:
                    break
                except OSError:
                    return
                if addr[2] == PACKET_OUTGOING and addr[3] == ARPHRD_LOOPBACK:
                    continue
                ts = None
                if stamps and anc and len(anc[0][2]) >= 16:
                    sec, nsec = _TIMESPEC.unpack_from(anc[0][2])
                    ts = sec + nsec / 1e9
                take(ts or time.time(), bytes(view[:n]), addr)
