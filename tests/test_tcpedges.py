"""TCP starts and ends on the wire (netsql/capture/tcpedges.py): the parser on built
segments, and the BPF program on a real loopback connection."""

from __future__ import annotations

import os
import socket
import time

import dpkt
import pytest

from netsql.capture import tcpedges
from netsql.procfs import own_netns
from tests.conftest import need


def segment(flags: int, v6: bool = False) -> bytes:
    tcp = dpkt.tcp.TCP(sport=40000, dport=443, flags=flags, off=5)
    if v6:
        ip6 = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, "2001:db8::1"),
                           dst=socket.inet_pton(socket.AF_INET6, "2001:db8::2"), nxt=6,
                           hlim=64, data=tcp, plen=len(bytes(tcp)))
        return bytes(ip6)
    return bytes(dpkt.ip.IP(src=socket.inet_aton("10.0.0.1"), dst=socket.inet_aton("10.0.0.2"),
                            p=6, data=tcp))


@pytest.mark.parametrize("v6", [False, True])
def test_parse(v6: bool) -> None:
    a, b = ("2001:db8::1", "2001:db8::2") if v6 else ("10.0.0.1", "10.0.0.2")
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
    out = {(name, outgoing): list(tcpedges.parse(segment(flags, v6), outgoing))
           for name, flags in (("syn", SYN), ("synack", SYN | ACK), ("fin", FIN | ACK),
                               ("rst", RST), ("data", PSH | ACK))
           for outgoing in (True, False)}
    mine, theirs = (fam, a, 40000, b, 443), (fam, b, 443, a, 40000)
    assert out[("syn", True)] == [tcpedges.Edge(True, True, *mine)]
    assert out[("syn", False)] == [tcpedges.Edge(True, False, *theirs)]
    assert out[("synack", True)] == out[("synack", False)] == []
    assert out[("fin", True)] == [tcpedges.Edge(False, True, *mine)]
    assert out[("fin", False)] == []  # the peer closing is not our end
    assert out[("rst", False)] == [tcpedges.Edge(False, False, *theirs)]
    assert out[("data", True)] == out[("data", False)] == []
    assert list(tcpedges.parse(segment(SYN, v6)[:30], True)) == []  # cut short


def test_only_opening_and_closing_segments_reach_the_socket() -> None:
    need(os.geteuid() == 0, "needs root for packet sockets")
    edges = tcpedges.EdgeSockets()
    own = own_netns()
    assert own is not None
    edges.join({own: "/proc/self/ns/net"}, own)
    assert edges.errors == [] and own in edges.socks
    sock = edges.socks[own]
    try:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        cli = socket.create_connection(srv.getsockname())
        acc, _ = srv.accept()
        cport = cli.getsockname()[1]
        ports = {cport, srv.getsockname()[1]}
        for _ in range(50):  # data both ways: none of it may reach the socket
            cli.sendall(b"x" * 100)
            acc.recv(100)
        cli.close()
        acc.close()
        srv.close()
        # Raw, as the kernel's filter passed them: the SYN, and each side's FIN, each
        # seen twice on loopback (out, then in); no data, no ACK, no SYN-ACK.
        raw: list[tuple[float, bytes, bool]] = []
        bufs = [bytearray(256)]
        deadline = time.monotonic() + 5
        while len(raw) < 6:
            assert time.monotonic() < deadline, raw
            try:
                n, _, _, addr = sock.recvmsg_into(bufs, 64)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            pkt = bytes(bufs[0][:n])
            l4 = (pkt[0] & 15) * 4
            if {int.from_bytes(pkt[l4:l4 + 2], "big"),
                    int.from_bytes(pkt[l4 + 2:l4 + 4], "big")} == ports:
                raw.append((time.time(), pkt, addr[2] == tcpedges.PACKET_OUTGOING))
        assert all(p[(p[0] & 15) * 4 + 13] & 0x07 for _, p, _ in raw)
        edges_of = [e for _, p, out in raw for e in tcpedges.parse(p, out)]
        kinds = sorted((e.start, e.outgoing, e.lport == cport) for e in edges_of)
        assert kinds == [(False, True, False), (False, True, True), (True, False, False),
                         (True, True, True)]
    finally:
        edges.close()

