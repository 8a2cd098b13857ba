"""NETLINK_SOCK_DIAG: the kernel's socket dump, as ``ss`` reads it.

Faster than formatting and parsing /proc/net/tcp (the kernel skips the text, we
skip the parsing), and it can return TCP_INFO for the flows table. Sockets of
another network namespace are dumped through a netlink socket opened inside it
(setns in a helper thread; needs CAP_SYS_ADMIN).
"""

from __future__ import annotations

import os
import socket
import struct
from types import ModuleType
from typing import Any

from netsql import netlink, netns
from netsql.netlink import HDR, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
#: The older request (struct inet_diag_req), TCP only: the kernel dumps both families
#: in one walk of the TCP hash table, which every namespace's dump walks whole (shared
#: by all namespaces): measured with 40,000 sockets on the host, 12 ms of CPU per walk
#: even for a namespace with none, twice that for an IPv4 and an IPv6 request.
TCPDIAG_GETSOCK = 18
INET_DIAG_INFO = 2
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_S_GE, INET_DIAG_BC_S_LE = 2, 3
INET_DIAG_CGROUP_ID = 21  # Linux 5.7+: sent with every socket

_PORTS = struct.Struct(">HH")
_TAIL = struct.Struct("=IIIII")  # expires, rqueue, wqueue, uid, inode


_cdiag: ModuleType | None
try:
    from netsql import _cdiag
except ImportError:  # built without a C compiler: _py_rows
    _cdiag = None

Tcp = tuple[int | None, int | None, int | None, int | None, int | None, int | None,
            int | None, float | None, float | None, float | None]
"""tcp_info counters: bytes_sent, bytes_acked, bytes_received, bytes_retrans, segs_out,
segs_in, total_retrans, rtt (s), since last send (s), since last receive (s)."""
Row = tuple[int, int, int, int | None, str, str | None, int, int, int, int, Tcp | None]
"""family, state, sport, dport, local address, remote address (dport and remote None:
unconnected),
rqueue, wqueue, uid, inode, tcp_info counters (None unless asked for)."""


class SockDiagError(OSError):
    pass


def open_socket(netns_path: str | None = None, expect: int | None = None) -> socket.socket:
    """A sock_diag netlink socket, inside the namespace of ``netns_path`` if given
    (``expect``: that namespace's inode, checked: netns.call_in)."""
    return netns.call_in(netns_path, lambda: socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG), expect=expect)


Ports = tuple[int, int]
"""The first and the last local port of the sockets a dump is to hold."""


def port_filter(ports: Ports) -> bytes:
    """inet_diag bytecode (INET_DIAG_REQ_BYTECODE's value) that passes the sockets whose
    local port is within ``ports`` (both ends included), as ``ss 'sport >= :A and sport
    <= :B'`` compiles it: each test jumps past the end (+4: reject) when it fails."""
    first, last = ports
    tests = [(INET_DIAG_BC_S_GE, first)] if first > 0 else []
    if last < 0xFFFF:
        tests.append((INET_DIAG_BC_S_LE, last))
    code = b""
    for i, (op, port) in enumerate(tests):
        left = 8 * (len(tests) - i)  # this test and the ones after it
        code += struct.pack("=BBHBBH", op, 8, left + 4, 0, 0, port)
    return code


def _request(sock: socket.socket, family: int, protocol: int, states: int, ext: int,
             ports: Ports | None = None) -> None:
    code = port_filter(ports) if ports is not None else b""
    tail = netlink.attr(INET_DIAG_REQ_BYTECODE, code) if code else b""
    if family == socket.AF_UNSPEC and protocol == socket.IPPROTO_TCP:
        # struct inet_diag_req: the kernel answers it with both families (compat).
        req = struct.pack("=BBBB", 0, 0, 0, ext) + bytes(48) + struct.pack("=II", states, 0)
        sock.send(netlink.message(TCPDIAG_GETSOCK, NLM_F_REQUEST | NLM_F_DUMP, 1,
                                  req + tail))
        return
    req = struct.pack("=BBBBI", family, protocol, ext, 0, states) + bytes(48)
    sock.send(netlink.message(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, req + tail))


def rows(sock: socket.socket, family: int, protocol: int, *, states: int = 0xFFFFFFFF,
         info: bool = False, ports: Ports | None = None) -> list[Row]:
    """Every socket of ``family``/``protocol`` in ``states`` (and with a local port in
    ``ports``, when given) as a Row, with tcp_info counters when ``info``; AF_UNSPEC
    with TCP: both families in one dump (TCPDIAG_GETSOCK). Parsed by _cdiag.c when
    built, else by _py_rows."""
    _request(sock, family, protocol, states, 1 << (INET_DIAG_INFO - 1) if info else 0,
             ports)
    buf = bytearray(1 << 17)
    out: list[Row] = []
    while True:
        n = sock.recv_into(buf)
        status = parse(buf, n, out) if n else 1
        if status < 0:
            raise SockDiagError(-status, os.strerror(-status))
        if status:
            return out


#: The sockets table's columns that :func:`columns` fills, in this order.
COLUMNS = ("family", "protocol", "local_address", "local_port", "remote_address",
           "remote_port", "state", "tx_queue", "rx_queue", "uid", "inode", "net_namespace")
FAMILY_TEXT: dict[int, str] = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}


def columns(sock: socket.socket, family: int, protocol: int, cols: list[list[Any]],
            states: list[str] | list[str | None], pname: str, ns: int | None,
            ports: Ports | None = None) -> None:
    """Every socket of ``family``/``protocol`` (with a local port in ``ports``, when
    given) appended to ``cols``, the lists of the :data:`COLUMNS`, one value each (no
    row tuples): ``states[n]`` is state n's text, ``pname`` the protocol column's value,
    ``ns`` the namespace column's. AF_UNSPEC with TCP: both families in one dump. Parsed
    by _cdiag.c when built, else _py_columns."""
    _request(sock, family, protocol, 0xFFFFFFFF, 0, ports)
    buf = bytearray(1 << 17)
    fill = _cdiag.columns if _cdiag is not None else _py_columns
    while True:
        n = sock.recv_into(buf)
        status = fill(buf, n, cols, states, pname, ns) if n else 1
        if status < 0:
            raise SockDiagError(-status, os.strerror(-status))
        if status:
            return


def _py_columns(buf: bytearray, n: int, cols: list[list[Any]], states: list[str] | list[str | None],
                pname: str, ns: int | None) -> int:
    """The pure-Python _cdiag.columns: buf[:n]'s sockets appended to ``cols``."""
    out: list[Row] = []
    status = _py_rows(buf, n, out)
    append_columns(out, cols, states, pname, ns)
    return status


def append_columns(rows: list[Row], cols: list[list[Any]], states: list[str] | list[str | None],
                   pname: str, ns: int | None) -> None:
    """Rows appended to ``cols`` (the lists of :data:`COLUMNS`), as _cdiag.columns does."""
    (family_c, proto_c, laddr_c, lport_c, raddr_c, rport_c, state_c, txq_c, rxq_c, uid_c,
     inode_c, ns_c) = cols
    for fam, state, sport, dport, local, remote, rq, wq, uid, inode, _tcp in rows:
        family_c.append(FAMILY_TEXT[fam])
        proto_c.append(pname)
        laddr_c.append(local)
        lport_c.append(sport)
        raddr_c.append(remote)
        rport_c.append(dport)
        state_c.append(states[state])
        txq_c.append(wq)
        rxq_c.append(rq)
        uid_c.append(uid)
        inode_c.append(inode)
        ns_c.append(ns)


def parse(buf: bytearray, n: int, out: list[Row]) -> int:
    """Append the sockets of ``buf[:n]`` (dump replies or destroy notifications) to
    ``out`` as Rows: 0 more follow, 1 done, -errno the kernel's error."""
    return _cdiag.rows(buf, n, out) if _cdiag is not None else _py_rows(buf, n, out)


#: sock_diag multicast groups announcing destroyed sockets with their last counters
#: (SKNLGRP_INET_TCP_DESTROY, _INET_UDP_, _INET6_TCP_, _INET6_UDP_).
DESTROY_GROUPS = (1, 2, 3, 4)
_SOL_NETLINK, _NETLINK_ADD_MEMBERSHIP = 270, 1
SO_RCVBUFFORCE = 33


def destroy_socket(netns_path: str | None = None, expect: int | None = None
                   ) -> socket.socket:
    """A sock_diag socket that receives every TCP and UDP socket destroyed in the
    namespace of ``netns_path`` (here when None), TCP with its tcp_info. Needs root.
    ``expect``: that namespace's inode, checked (netns.call_in)."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        try:
            sock.bind((0, 0))
            # Room for a burst (a busy host closes thousands a second): 4 MiB.
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
            for group in DESTROY_GROUPS:
                sock.setsockopt(_SOL_NETLINK, _NETLINK_ADD_MEMBERSHIP, group)
        except OSError:
            sock.close()
            raise
        return sock

    return netns.call_in(netns_path, make, expect=expect)


_U64 = struct.Struct("=Q").unpack_from
_U32 = struct.Struct("=I").unpack_from
_ZERO = bytes(16)


def _py_rows(buf: bytearray, n: int, out: list[Row]) -> int:
    """The pure-Python _cdiag.rows: append buf[:n]'s messages to ``out``; 0 more
    follow, 1 done, -errno the kernel's error."""
    off = 0
    n = min(n, len(buf))
    while off + 16 <= n:
        length, kind, _, _, _ = HDR.unpack_from(buf, off)
        if length < 16 or kind == NLMSG_DONE:
            return 1
        if kind == NLMSG_ERROR:
            return -netlink.error_code(buf, off + 16, n) or 1
        size = min(length, n - off) - 16
        m = off + 16
        if kind in (SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK) and size >= 72 and buf[m] in (
                socket.AF_INET,
                                                                       socket.AF_INET6):
            fam = buf[m]
            alen = 4 if fam == socket.AF_INET else 16
            sport, dport = _PORTS.unpack_from(buf, m + 4)
            _, rq, wq, uid, inode = _TAIL.unpack_from(buf, m + 52)
            local = socket.inet_ntop(fam, bytes(buf[m + 8:m + 8 + alen]))
            raw = bytes(buf[m + 24:m + 24 + alen])
            remote = None if dport == 0 and raw == _ZERO[:alen] else socket.inet_ntop(fam, raw)
            tcp = None
            a, end = m + 72, m + size
            for atype, vstart, vend in netlink.attributes(buf, a, end):
                if atype == INET_DIAG_INFO:
                    tcp = _tcp_counters(bytes(buf[vstart:vend]))
            out.append((fam, buf[m + 1], sport, None if remote is None else dport, local,
                        remote, rq, wq, uid, inode, tcp))
        off += netlink.align(length)
    return 0


def _tcp_counters(info: bytes) -> Tcp:
    """The Tcp counters from a struct tcp_info (None where the kernel's is too short)."""
    n = len(info)

    def q(off: int) -> int | None:
        return _U64(info, off)[0] if n >= off + 8 else None

    def i(off: int) -> int | None:
        return _U32(info, off)[0] if n >= off + 4 else None

    return (q(200), q(120), q(128), q(208), i(136), i(140), i(100),
            _U32(info, 68)[0] / 1e6 if n >= 72 else None,
            _U32(info, 44)[0] / 1e3 if n >= 60 else None,
            _U32(info, 52)[0] / 1e3 if n >= 60 else None)


def find(sock: socket.socket, family: int, protocol: int, local: tuple[str, int],
         remote: tuple[str, int], cgroup: list[int | None] | None = None) -> Row | None:
    """The one socket with this local and remote end (the kernel's own lookup), if any;
    its cgroup v2 id is appended to ``cgroup`` when given (None: the kernel's too old).

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
        sock.send(netlink.message(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 2, req))
        data = bytearray(sock.recv(65536))
        found: list[Row] = []
        parse(data, len(data), found)
        if found and found[0][2] == local[1]:
            if cgroup is not None:
                cgroup.append(_cgroup_id(data))
            return found[0]
    return None


def _cgroup_id(data: bytearray) -> int | None:
    """INET_DIAG_CGROUP_ID of the first socket in a sock_diag reply (Linux 5.7+)."""
    for kind, _, start, end in netlink.messages(data):
        if kind != SOCK_DIAG_BY_FAMILY:
            continue
        for atype, vstart, vend in netlink.attributes(data, start + 72, end):
            if atype == INET_DIAG_CGROUP_ID and vend - vstart >= 8:
                return int(struct.unpack_from("=Q", data, vstart)[0])
        return None
    return None
