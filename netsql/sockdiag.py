"""NETLINK_SOCK_DIAG: the kernel's socket dump, as ``ss`` reads it.

Faster than formatting and parsing /proc/net/tcp (the kernel skips the text, we
skip the parsing), and it can return TCP_INFO for the flows table. Sockets of
another network namespace are dumped through a netlink socket opened inside it
(setns in a helper thread; needs CAP_SYS_ADMIN).
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
CLONE_NEWNET = 0x40000000
INET_DIAG_INFO = 2

_HDR = struct.Struct("=IHHII")
_MSG = struct.Struct("=BBBB")
_PORTS = struct.Struct(">HH")
_TAIL = struct.Struct("=IIIII")  # expires, rqueue, wqueue, uid, inode
_ATTR = struct.Struct("=HH")


class SockDiagError(OSError):
    pass


@dataclass(slots=True)
class DiagSocket:
    family: int
    state: int
    sport: int
    dport: int
    src: bytes
    dst: bytes
    rqueue: int
    wqueue: int
    uid: int
    inode: int
    info: bytes | None  # struct tcp_info when asked for


def open_socket(netns_path: str | None = None) -> socket.socket:
    """A sock_diag netlink socket, inside the namespace of ``netns_path`` if given."""
    if netns_path is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    box: list[socket.socket | BaseException] = []

    def inside() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(netns_path, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            box.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG))
        except BaseException as exc:  # handed to the caller's thread
            box.append(exc)

    # A thread that called setns must not go back to serving Python code in the
    # wrong namespace: it ends right after opening the socket.
    t = threading.Thread(target=inside, daemon=True)
    t.start()
    t.join()
    result = box[0]
    if isinstance(result, BaseException):
        raise result
    return result


def dump(sock: socket.socket, family: int, protocol: int, *, states: int = 0xFFFFFFFF,
         ext: int = 0) -> Iterator[DiagSocket]:
    req = struct.pack("=BBBBI", family, protocol, ext, 0, states) + bytes(48)
    sock.send(_HDR.pack(_HDR.size + len(req), SOCK_DIAG_BY_FAMILY,
                        NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + req)
    buf = bytearray(1 << 17)
    view = memoryview(buf)
    alen = 4 if family == socket.AF_INET else 16
    while True:
        n = sock.recv_into(buf)
        off = 0
        while off + 16 <= n:
            length, kind, _, _, _ = _HDR.unpack_from(buf, off)
            if length < 16:
                return
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                errno = -struct.unpack_from("=i", buf, off + 16)[0]
                if errno:
                    raise SockDiagError(errno, os.strerror(errno))
                return
            if kind == SOCK_DIAG_BY_FAMILY:
                m = off + 16
                fam, state = buf[m], buf[m + 1]
                sport, dport = _PORTS.unpack_from(buf, m + 4)
                _, rq, wq, uid, inode = _TAIL.unpack_from(buf, m + 52)
                info = None
                if ext:
                    a = m + 72
                    end = off + length
                    while a + 4 <= end:
                        alen_, atype = _ATTR.unpack_from(buf, a)
                        if alen_ < 4:
                            break
                        if atype == INET_DIAG_INFO:
                            info = bytes(view[a + 4 : a + alen_])
                        a += (alen_ + 3) & ~3
                yield DiagSocket(fam, state, sport, dport, bytes(view[m + 8 : m + 8 + alen]),
                                 bytes(view[m + 24 : m + 24 + alen]), rq, wq, uid, inode, info)
            off += (length + 3) & ~3


def find(sock: socket.socket, family: int, protocol: int, local: tuple[str, int],
         remote: tuple[str, int]) -> DiagSocket | None:
    """The one socket with this local and remote end (the kernel's own lookup), if any.

    TCP takes the ids as (local, remote); UDP's lookup reads them the other way round
    ("src and dst are swapped for historical reasons", udp_diag.c), so both orders are
    tried and the answer is checked against the local port.
    """
    def ip(addr: str) -> bytes:
        raw = socket.inet_pton(family, addr)
        return raw + bytes(16 - len(raw))

    orders = [(local, remote), (remote, local)]
    if protocol == socket.IPPROTO_UDP:
        orders.reverse()
    for (a, ap), (b, bp) in orders:
        req = (struct.pack("=BBBBI", family, protocol, 0, 0, 0xFFFFFFFF)
               + struct.pack(">HH", ap, bp) + ip(a) + ip(b)
               + struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF))
        sock.send(_HDR.pack(_HDR.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 2, 0)
                  + req)
        data = sock.recv(65536)
        if len(data) < 16:
            continue
        length, kind, _, _, _ = _HDR.unpack_from(data, 0)
        if kind != SOCK_DIAG_BY_FAMILY or len(data) < 16 + 72:
            continue
        m = 16
        sport, dport = _PORTS.unpack_from(data, m + 4)
        _, rq, wq, uid, inode = _TAIL.unpack_from(data, m + 52)
        alen = 4 if family == socket.AF_INET else 16
        found = DiagSocket(data[m], data[m + 1], sport, dport, data[m + 8 : m + 8 + alen],
                           data[m + 24 : m + 24 + alen], rq, wq, uid, inode, None)
        if found.sport == local[1]:
            return found
    return None
