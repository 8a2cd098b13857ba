"""TCP connections opening and closing, seen on the wire in each network namespace.

The recorder (history/recorder.py) learns a connection's start from its SYN and its
end from its FIN or RST, at the instant the kernel handed the packet over, whatever
the number of sockets on the host: a sock_diag dump walks every socket of the host
once per namespace, so on a busy host the polls space out and cannot date a connect
within seconds. One cooked AF_PACKET socket per namespace, with a BPF program
(bpf.tcp_edges_filter) that lets only those segments through, headers only: the
steady traffic of established connections never leaves the kernel. Passive: nothing
is held, delayed or changed.

Each segment is read from the side of the host that sent or received it: an outgoing
SYN is a local connect (the local end is the source), an incoming SYN is a connection
to a local server (the local end is the destination). On loopback both copies are
seen, so both ends of a local connection are dated. A FIN ends the sender's side; an
RST ends both (the receiver's socket is closed by it).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from typing import NamedTuple

from netsql import netns
from netsql.capture import bpf
from netsql.capture.live import (
    PACKET_OUTGOING,
    PACKET_STATISTICS,
    SOL_PACKET,
    open_packet_sockets,
)

SYN, FIN, RST, ACK = 0x02, 0x01, 0x04, 0x10
#: Kernel buffer of each namespace's socket: a burst of ~20,000 segments (~100 bytes
#: each with the kernel's overhead) waits there while the reader is busy.
RCVBUF = 2 << 20
#: Segments read from one socket per call, so one busy namespace does not starve the
#: others or the destroy notifications that share the reader's thread.
BATCH = 512
SO_TIMESTAMPNS = 35  # the kernel's time of each packet: a busy reader still dates right
_TIMESPEC = struct.Struct("=qq")


class Edge(NamedTuple):
    """One end of a connection opening (``start``) or closing, from the local side."""

    start: bool
    #: Sent by this host (the local end began it), not received.
    outgoing: bool
    family: int
    local: str
    lport: int
    remote: str
    rport: int


def parse(pkt: bytes, outgoing: bool) -> Iterator[Edge]:
    """The edge a segment tells, if any (none for a malformed one; on loopback the two
    copies of an RST end both the sender's and the receiver's side)."""
    try:
        if pkt[0] >> 4 == 4:
            family, l4 = socket.AF_INET, (pkt[0] & 15) * 4
            src, dst = socket.inet_ntoa(pkt[12:16]), socket.inet_ntoa(pkt[16:20])
        else:
            family, l4 = socket.AF_INET6, 40
            src = socket.inet_ntop(socket.AF_INET6, pkt[8:24])
            dst = socket.inet_ntop(socket.AF_INET6, pkt[24:40])
        sport, dport, flags = int.from_bytes(pkt[l4:l4 + 2], "big"), \
            int.from_bytes(pkt[l4 + 2:l4 + 4], "big"), pkt[l4 + 13]
    except (IndexError, OSError, ValueError):
        return
    if flags & SYN and not flags & ACK:
        start = True
    elif flags & RST or (flags & FIN and outgoing):
        start = False
    else:
        return
    if outgoing:
        yield Edge(start, outgoing, family, src, sport, dst, dport)
    else:
        yield Edge(start, outgoing, family, dst, dport, src, sport)


class EdgeSockets:
    """One filtered packet socket per network namespace, opened inside it."""

    def __init__(self) -> None:
        self.socks: dict[int, socket.socket] = {}
        self.errors: list[str] = []

    def join(self, present: dict[int, str], own: int | None) -> None:
        """Open a socket in each namespace of ``present`` (inode -> handle) that has
        none; close those of namespaces gone."""
        for ns in set(self.socks) - set(present):
            self.socks.pop(ns).close()
        for ns, handle in present.items():
            if ns in self.socks:
                continue
            try:
                sock = netns.call_in(
                    None if ns == own else handle,
                    lambda: open_packet_sockets(None, bpf.tcp_edges_filter(), RCVBUF)[0],
                    expect=None if ns == own else ns)
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                self.socks[ns] = sock
            except OSError as exc:
                message = f"TCP starts and ends in namespace {ns}: {exc}"
                if message not in self.errors:
                    self.errors.append(message)

    def read(self, sock: socket.socket, buf: bytearray) -> list[tuple[float, Edge]]:
        """The edges of the segments waiting on ``sock`` (at most BATCH segments), each
        with the kernel's time of its segment (epoch seconds)."""
        out: list[tuple[float, Edge]] = []
        bufs = [buf]
        for _ in range(BATCH):
            try:
                n, anc, _, addr = sock.recvmsg_into(bufs, 64)
            except (BlockingIOError, InterruptedError):
                break
            if anc and len(anc[0][2]) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(anc[0][2])
                ts = sec + nsec / 1e9
            else:
                ts = time.time()
            out.extend((ts, e) for e in parse(bytes(buf[:n]), addr[2] == PACKET_OUTGOING))
        return out

    def drops(self) -> int:
        """Segments the kernel dropped (buffers full) since the last call, all
        namespaces."""
        total = 0
        for s in self.socks.values():
            try:
                raw = s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            except OSError:
                continue
            total += int.from_bytes(raw[4:8], "little")
        return total

    def close(self) -> None:
        for s in self.socks.values():
            s.close()
        self.socks.clear()
