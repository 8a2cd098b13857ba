"""UDP and ICMP flows seen on the wire: packets and bytes per 5-tuple, both ways.

TCP flows come from the kernel's own counters (sock_diag TCP_INFO, see the flows
table); datagram protocols have no per-socket byte counters, so while live capture
runs, a second AF_PACKET socket (BPF: UDP/ICMP headers only) counts them here.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from netsql.capture import bpf
from netsql.capture.live import PACKET_OUTGOING, Reader, open_packet_sockets, packet_loop

PROTOS = {17: "udp", 1: "icmp", 58: "icmp"}
MAX_FLOWS = 200_000


@dataclass(slots=True)
class Flow:
    protocol: str
    family: str
    local_address: str
    local_port: int | None
    remote_address: str
    remote_port: int | None
    interface: str
    first_seen: float
    last_seen: float
    packets_out: int = 0
    packets_in: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    net_namespace: int | None = None  # where the packets were seen


class FlowCapture(Reader):
    def __init__(self, interfaces: Sequence[str] | None = None,
                 exclude_ports: Sequence[int] = (), netns: int | None = None) -> None:
        self.interfaces = list(interfaces) if interfaces else None
        self.netns = netns  # the namespace the sockets are opened in (nsset.py)
        self.exclude_ports = list(exclude_ports)
        self.flows: dict[tuple[object, ...], Flow] = {}
        self.lock = threading.Lock()
        self.packets = 0
        self.evicted = 0
        self._socks: list[socket.socket] = []
        super().__init__()

    def open(self) -> None:
        """Open the sockets (in the calling thread's network namespace)."""
        self._socks = open_packet_sockets(
            self.interfaces, bpf.udp_icmp_filter(exclude_ports=self.exclude_ports), 4 << 20)

    def start(self) -> None:
        if not self._socks:
            self.open()
        self._spawn("netsql-flows")

    def stop(self) -> None:
        self._join()
        for s in self._socks:
            s.close()
        self._socks = []

    def snapshot(self) -> list[Flow]:
        with self.lock:
            return list(self.flows.values())

    def _run(self) -> None:
        def take(ts: float, packet: bytes, addr: tuple[Any, ...]) -> None:
            self.packets += 1
            self._count(packet, addr[0], addr[2] == PACKET_OUTGOING)

        packet_loop(self._socks, self._stop, take, 256)

    def _count(self, pkt: bytes, ifname: str, outgoing: bool) -> None:
        try:
            if pkt[0] >> 4 == 4:
                proto, size = pkt[9], struct.unpack_from(">H", pkt, 2)[0]
                src, dst = socket.inet_ntoa(pkt[12:16]), socket.inet_ntoa(pkt[16:20])
                l4, family = (pkt[0] & 15) * 4, "ipv4"
            else:
                proto, size = pkt[6], struct.unpack_from(">H", pkt, 4)[0] + 40
                src = socket.inet_ntop(socket.AF_INET6, pkt[8:24])
                dst = socket.inet_ntop(socket.AF_INET6, pkt[24:40])
                l4, family = 40, "ipv6"
            if proto == 17:
                sport, dport = struct.unpack_from(">HH", pkt, l4)
            else:
                sport = dport = None
        except (IndexError, struct.error, OSError):
            return
        name = PROTOS.get(proto)
        if name is None:
            return
        # Outgoing packets are ours to send; on loopback both ends are local.
        if outgoing:
            local, lport, remote, rport = src, sport, dst, dport
        else:
            local, lport, remote, rport = dst, dport, src, sport
        key = (name, local, lport, remote, rport)
        now = time.time()
        with self.lock:
            flow = self.flows.get(key)
            if flow is None:
                if len(self.flows) >= MAX_FLOWS:
                    self.flows.pop(next(iter(self.flows)))
                    self.evicted += 1
                flow = self.flows[key] = Flow(name, family, local, lport, remote, rport,
                                              ifname, now, now, net_namespace=self.netns)
            flow.last_seen = now
            if outgoing:
                flow.packets_out += 1
                flow.bytes_out += size
            else:
                flow.packets_in += 1
                flow.bytes_in += size
