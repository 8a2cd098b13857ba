"""sock_diag parsing: the compiled parser (netsql/_cdiag.c) against its pure-Python twin
(sockdiag._py_rows) on the kernel's real dumps of real sockets, and on damaged ones; and
both against the sockets the test opened."""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netsql import netlink, sockdiag
from tests.conftest import need
from tests.mutate import Edit, apply_edits, edits


def compiled() -> Any:
    need(sockdiag._cdiag is not None, "the compiled sock_diag parser (_cdiag) was not "
         "built: needs a C compiler and Python headers at install time")
    return sockdiag._cdiag


def raw_dump(family: int, proto: int, info: bool) -> list[bytes]:
    """The netlink datagrams of one dump, as received."""
    with sockdiag.open_socket() as sock:
        sockdiag._request(sock, family, proto, 0xFFFFFFFF,
                          1 << (sockdiag.INET_DIAG_INFO - 1) if info else 0)
        out = []
        while True:
            data = sock.recv(1 << 17)
            out.append(data)
            if sockdiag._py_rows(bytearray(data), len(data), []) != 0 or not data:
                return out


def parse_both(datagrams: list[bytes]) -> tuple[list[Any], list[Any], list[int], list[int]]:
    cdiag = compiled()
    c_rows: list[Any] = []
    py_rows: list[Any] = []
    c_status, py_status = [], []
    for data in datagrams:
        c_status.append(cdiag.rows(data, len(data), c_rows))
        py_status.append(sockdiag._py_rows(bytearray(data), len(data), py_rows))
    return c_rows, py_rows, c_status, py_status


def test_real_dumps_parse_alike() -> None:
    socks = []
    for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        srv = socket.socket(fam, socket.SOCK_STREAM)
        srv.bind((host, 0))
        srv.listen(50)
        port = srv.getsockname()[1]
        socks.append(srv)
        for _ in range(40):
            c = socket.create_connection((host, port))
            a, _ = srv.accept()
            c.sendall(b"x" * 5000)
            assert len(a.recv(65536)) > 0
            socks += [c, a]
        u = socket.socket(fam, socket.SOCK_DGRAM)
        u.bind((host, 0))
        u2 = socket.socket(fam, socket.SOCK_DGRAM)
        u2.connect(u.getsockname())
        socks += [u, u2]
    try:
        for fam in (socket.AF_INET, socket.AF_INET6):
            for proto, info in ((socket.IPPROTO_TCP, True), (socket.IPPROTO_TCP, False),
                                (socket.IPPROTO_UDP, False)):
                c_rows, py_rows, cs, ps = parse_both(raw_dump(fam, proto, info))
                assert c_rows == py_rows and cs == ps and cs[-1] == 1
                mine = {s.fileno(): os.fstat(s.fileno()).st_ino for s in socks
                        if s.family == fam and s.proto in (0, proto)
                        and s.type == (socket.SOCK_STREAM if proto == 6 else socket.SOCK_DGRAM)}
                assert len(mine) == (81 if proto == 6 else 2)  # ours, all of them
                by_inode = {r[9]: r for r in c_rows}
                for fd, inode in mine.items():
                    s = next(x for x in socks if x.fileno() == fd)
                    r = by_inode[inode]
                    assert (r[0], r[4], r[2]) == (fam, s.getsockname()[0], s.getsockname()[1])
                    try:
                        peer = s.getpeername()
                    except OSError:
                        assert r[5] is None and r[3] is None  # unconnected: no remote
                    else:
                        assert (r[5], r[3]) == (peer[0], peer[1])
                    if proto == 6 and info:
                        assert r[10] is not None and len(r[10]) == 10
                    else:
                        assert r[10] is None
                senders = [r for r in c_rows if r[10] is not None and r[10][0] == 5000]
                if proto == 6 and info:
                    assert len(senders) >= 40  # each client's bytes_sent
        # The older request (AF_UNSPEC): both families' TCP in one dump, the same rows.
        ours = {os.fstat(s.fileno()).st_ino for s in socks if s.type == socket.SOCK_STREAM}
        for info in (True, False):
            apart = [r for fam in (socket.AF_INET, socket.AF_INET6)
                     for r in parse_both(raw_dump(fam, socket.IPPROTO_TCP, info))[0]]
            c_rows, py_rows, cs, ps = parse_both(raw_dump(socket.AF_UNSPEC,
                                                          socket.IPPROTO_TCP, info))
            assert c_rows == py_rows and cs == ps and cs[-1] == 1
            both = {r[9]: r[:10] for r in c_rows if r[9] in ours}
            assert len(both) == 162 and both == {r[9]: r[:10] for r in apart if r[9] in ours}
            assert all((r[10] is not None) == info for r in c_rows if r[9] in ours)
    finally:
        for s in socks:
            s.close()


STATES = [f"s{i}" if i % 3 else None for i in range(256)]


def columns_both(datagrams: list[bytes], ns: int | None = 7) -> tuple[list[Any], list[Any],
                                                                      list[int], list[int]]:
    """The sockets table's columns from _cdiag.columns and from _py_columns."""
    cdiag = compiled()
    c_cols: list[list[Any]] = [[] for _ in sockdiag.COLUMNS]
    py_cols: list[list[Any]] = [[] for _ in sockdiag.COLUMNS]
    c_status, py_status = [], []
    for data in datagrams:
        c_status.append(cdiag.columns(data, len(data), c_cols, STATES, "tcp", ns))
        py_status.append(sockdiag._py_columns(bytearray(data), len(data), py_cols, STATES,
                                              "tcp", ns))
    return c_cols, py_cols, c_status, py_status


def test_real_dumps_columns_alike() -> None:
    """_cdiag.columns against its twin on real dumps of sockets of both families (both
    ends, listeners, connected and unconnected UDP), and against the rows parse."""
    socks = []
    for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        srv = socket.socket(fam, socket.SOCK_STREAM)
        srv.bind((host, 0))
        srv.listen(5)
        c = socket.create_connection(srv.getsockname()[:2])
        a, _ = srv.accept()
        u = socket.socket(fam, socket.SOCK_DGRAM)
        u.bind((host, 0))
        u2 = socket.socket(fam, socket.SOCK_DGRAM)
        u2.connect(u.getsockname())
        socks += [srv, c, a, u, u2]
    try:
        for fam, proto in ((socket.AF_UNSPEC, socket.IPPROTO_TCP),
                           (socket.AF_INET, socket.IPPROTO_UDP),
                           (socket.AF_INET6, socket.IPPROTO_UDP)):
            dump = raw_dump(fam, proto, False)
            c_cols, py_cols, cs, ps = columns_both(dump)
            assert c_cols == py_cols and cs == ps and cs[-1] == 1
            rows = parse_both(dump)[0]
            assert len(c_cols[0]) == len(rows) > 0
            got = {v[10]: dict(zip(sockdiag.COLUMNS, v, strict=True))
                   for v in zip(*c_cols, strict=True)}
            for s in socks:
                if s.type != (socket.SOCK_STREAM if proto == 6 else socket.SOCK_DGRAM) or (
                        fam != socket.AF_UNSPEC and s.family != fam):
                    continue
                r = got[os.fstat(s.fileno()).st_ino]
                assert r["family"] == ("ipv4" if s.family == socket.AF_INET else "ipv6")
                assert (r["protocol"], r["net_namespace"]) == ("tcp", 7)
                assert (r["local_address"], r["local_port"]) == s.getsockname()[:2]
                try:
                    peer = s.getpeername()[:2]
                except OSError:
                    peer = (None, None)
                assert (r["remote_address"], r["remote_port"]) == peer
                row = next(x for x in rows if x[9] == r["inode"])
                assert r["state"] == STATES[row[1]]
                assert (r["tx_queue"], r["rx_queue"], r["uid"]) == (row[7], row[6], row[8])
    finally:
        for s in socks:
            s.close()


def _seed() -> bytes:
    """A real dump of TCP sockets with tcp_info, as one buffer: the messages of the
    test's own sockets and the dump's end (a busy host's tens of thousands of sockets
    would make each of the thousands of examples parse megabytes in Python)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    c = socket.create_connection(srv.getsockname())
    a, _ = srv.accept()
    try:
        ours = {os.fstat(s.fileno()).st_ino for s in (c, a, srv)}
        data = b"".join(raw_dump(socket.AF_INET, socket.IPPROTO_TCP, True))
    finally:
        for s in (c, a, srv):
            s.close()
    kept, off = [], 0
    while off + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, off)
        message = data[off:off + length]
        if kind != sockdiag.SOCK_DIAG_BY_FAMILY or struct.unpack_from(
                "=I", message, 16 + 68)[0] in ours:
            kept.append(message)
        off += (length + 3) & ~3
    assert len(kept) == 4 and kept[-1][4] == netlink.NLMSG_DONE  # ours, then the end
    return b"".join(kept)


SEED = _seed()


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits(6), st.integers(0, 10**6), st.booleans())
def test_damaged_dumps_parse_alike(changes: list[Edit], cut: int, huge: bool) -> None:
    buf = bytearray(SEED)
    if huge and len(buf) >= 4:
        struct.pack_into("=I", buf, 0, 0xFFFFFFFE)  # a length that wraps 32-bit sums
    buf = apply_edits(buf, changes)
    data = bytes(buf[:len(buf) - cut % 200])
    c_rows, py_rows, cs, ps = parse_both([data])
    assert c_rows == py_rows and cs == ps
    c_cols, py_cols, cs, ps = columns_both([data], None)
    assert c_cols == py_cols and cs == ps


def listeners(count: int) -> list[socket.socket]:
    """``count`` TCP listeners of this namespace (IPv4 and IPv6 alternately), on ports
    the kernel picks."""
    out = []
    for i in range(count):
        fam, host = (socket.AF_INET, "127.0.0.1") if i % 2 else (socket.AF_INET6, "::1")
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.bind((host, 0))
        s.listen()
        out.append(s)
    return out


def test_port_filter_dumps_the_sockets_of_its_ports() -> None:
    """A dump with a local port range holds the sockets whose port is in it and no
    other; two ranges that meet hold each of our sockets once (the split dump of
    backends/linux_sockets.py)."""
    socks = listeners(12)
    try:
        ports = sorted(s.getsockname()[1] for s in socks)
        cut = ports[len(ports) // 2]
        ours = {os.fstat(s.fileno()).st_ino: s.getsockname()[1] for s in socks}
        seen: dict[int, int] = {}
        with sockdiag.open_socket() as sock:
            for first, last in ((0, cut - 1), (cut, 0xFFFF), (ports[2], ports[-3])):
                for info in (False, True):
                    rows = sockdiag.rows(sock, socket.AF_UNSPEC, socket.IPPROTO_TCP,
                                         info=info, ports=(first, last))
                    assert all(first <= r[2] <= last for r in rows)
                    got = {r[9] for r in rows if r[9] in ours}
                    assert got == {i for i, p in ours.items() if first <= p <= last}
                    if info or last == ports[-3]:
                        continue
                    for inode in got:
                        seen[inode] = seen.get(inode, 0) + 1
                cols: list[list[Any]] = [[] for _ in sockdiag.COLUMNS]
                sockdiag.columns(sock, socket.AF_UNSPEC, socket.IPPROTO_TCP, cols,
                                 STATES, "tcp", None, (first, last))
                assert all(first <= p <= last for p in cols[3])
                assert {i for i in cols[10] if i in ours} == {
                    i for i, p in ours.items() if first <= p <= last}
        assert seen == dict.fromkeys(ours, 1)
    finally:
        for s in socks:
            s.close()


def test_port_filter_bytecode() -> None:
    """As ss compiles `sport >= :A and sport <= :B`: 8-byte tests, each jumping past the
    end (+4) when it fails; an open end needs no test."""
    ge, le = sockdiag.INET_DIAG_BC_S_GE, sockdiag.INET_DIAG_BC_S_LE
    assert sockdiag.port_filter((100, 200)) == struct.pack(
        "=BBHBBHBBHBBH", ge, 8, 20, 0, 0, 100, le, 8, 12, 0, 0, 200)
    assert sockdiag.port_filter((0, 200)) == struct.pack("=BBHBBH", le, 8, 12, 0, 0, 200)
    assert sockdiag.port_filter((100, 0xFFFF)) == struct.pack("=BBHBBH", ge, 8, 12, 0, 0,
                                                              100)
    assert sockdiag.port_filter((0, 0xFFFF)) == b""
