"""A classic BPF program that lets only DNS through, so the kernel drops the rest.

Made for AF_PACKET SOCK_DGRAM sockets, where the data starts at the network header
and the ethertype (``skb->protocol``) is read with an ancillary load. Accepts UDP and
TCP over IPv4 (unfragmented or first fragments) and IPv6 (no extension headers) with
one of ``ports`` as the source or destination port; everything else never reaches
Python.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Sequence

SO_ATTACH_FILTER = 26
SKF_AD_PROTOCOL = (-0x1000 + 0) & 0xFFFFFFFF

# Opcodes (linux/filter.h).
LD_W_ABS, LD_H_ABS, LD_B_ABS, LD_H_IND, LD_B_IND, LDX_B_MSH = 0x20, 0x28, 0x30, 0x48, 0x50, 0xB1
JA, JEQ_K, JEQ_X, JSET_K, RET_K, TAX = 0x05, 0x15, 0x1D, 0x45, 0x06, 0x07

Insn = tuple[int, int, int, int]
# An instruction before assembly: (code, true label|None, false label|None, k).
_Sym = tuple[int, str | None, str | None, int]


class _Code:
    """A program being written: instructions with symbolic jump labels (_assemble)."""

    def __init__(self) -> None:
        self.code: list[tuple[str | None, _Sym]] = []

    def emit(self, op: int, k: int = 0, jt: str | None = None, jf: str | None = None,
             label: str | None = None) -> None:
        self.code.append((label, (op, jt, jf, k)))

    def by_family(self) -> None:
        """Jump to "v4" or "v6" by the packet's ethertype; anything else to "reject"."""
        self.emit(LD_H_ABS, SKF_AD_PROTOCOL)
        self.emit(JEQ_K, 0x0800, jt="v4")
        self.emit(JEQ_K, 0x86DD, jt="v6", jf="reject")


def dns_filter(ports: Sequence[int], snaplen: int = 262144) -> list[Insn]:
    """BPF instructions accepting UDP/TCP packets to or from any of ``ports``."""
    ports = list(dict.fromkeys(ports))
    if not ports or len(ports) > 64:
        raise ValueError("between 1 and 64 ports")
    code = _Code()
    emit = code.emit
    def port_checks(load: int, src_off: int, dst_off: int, label: str) -> None:
        emit(load, src_off, label=label)
        for p in ports:
            emit(JEQ_K, p, jt="accept")
        emit(load, dst_off)
        for p in ports:
            emit(JEQ_K, p, jt="accept")
        emit(JA, jt="reject")

    code.by_family()
    # IPv4: protocol, fragment offset, header length into X, then the ports.
    emit(LD_B_ABS, 9, label="v4")
    emit(JEQ_K, 17, jt="v4frag")
    emit(JEQ_K, 6, jf="reject")
    emit(LD_H_ABS, 6, label="v4frag")
    emit(JSET_K, 0x1FFF, jt="reject")
    emit(LDX_B_MSH, 0)
    port_checks(LD_H_IND, 0, 2, "v4ports")
    # IPv6: next header must be UDP or TCP (no extension headers).
    emit(LD_B_ABS, 6, label="v6")
    emit(JEQ_K, 17, jt="v6ports")
    emit(JEQ_K, 6, jf="reject")
    port_checks(LD_H_ABS, 40, 42, "v6ports")
    emit(RET_K, snaplen, label="accept")
    emit(RET_K, 0, label="reject")
    return _assemble(code.code)


def _assemble(code: list[tuple[str | None, _Sym]]) -> list[Insn]:
    where = {label: i for i, (label, _) in enumerate(code) if label}
    out: list[Insn] = []
    for i, (_, (op, jt, jf, k)) in enumerate(code):
        if op == JA:
            assert jt is not None
            out.append((op, 0, 0, where[jt] - i - 1))
            continue
        t = where[jt] - i - 1 if jt else 0
        f = where[jf] - i - 1 if jf else 0
        if not (0 <= t < 256 and 0 <= f < 256):
            raise ValueError("BPF jump out of range")
        out.append((op, t, f, k))
    return out


def attach(sock: socket.socket, prog: list[Insn]) -> None:
    """Attach ``prog`` to ``sock`` (SO_ATTACH_FILTER)."""
    raw = b"".join(struct.pack("=HBBI", *insn) for insn in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def proc_events_filter(fork: int, leader_events: Sequence[int]) -> list[Insn]:
    """Accept the proc connector's events of processes, not of their threads: event
    ``fork`` whose child is a process (its pid its thread group's), and the events
    ``leader_events`` of a thread group's leader; drop the rest (a thread's clone,
    exit or rename, the subscription's acknowledgement) in the kernel. On a netlink
    socket the data is one message a datagram, as the connector sends its events:
    nlmsghdr (16 bytes), cn_msg (20), then proc_event's ``what`` at 36 and its
    pids from 52 (linux/cn_proc.h). The words are in host order and a load swaps
    them, so event types are compared swapped and pids only with each other."""
    def swapped(v: int) -> int:
        return int.from_bytes(v.to_bytes(4, "little"), "big")

    code = _Code()
    emit = code.emit
    emit(LD_W_ABS, 36)
    emit(JEQ_K, swapped(fork), jt="fork")
    for i, what in enumerate(leader_events):
        last = i == len(leader_events) - 1
        emit(JEQ_K, swapped(what), jt="leader", jf="reject" if last else None)
    emit(LD_W_ABS, 52 + 8, label="fork")  # child pid, child tgid
    emit(TAX)
    emit(LD_W_ABS, 52 + 12)
    emit(JEQ_X, jt="accept", jf="reject")
    emit(LD_W_ABS, 52, label="leader")  # pid, tgid
    emit(TAX)
    emit(LD_W_ABS, 52 + 4)
    emit(JEQ_X, jt="accept", jf="reject")
    emit(RET_K, 0xFFFFFFFF, label="accept")
    emit(RET_K, 0, label="reject")
    return _assemble(code.code)


def tcp_edges_filter(snaplen: int = 128) -> list[Insn]:
    """Accept the TCP segments that open or close a connection (headers only): SYN
    without ACK, FIN, RST; over IPv4 (unfragmented or first fragments) and IPv6 (no
    extension headers). A host's steady traffic never reaches Python."""
    code = _Code()
    emit = code.emit
    code.by_family()
    emit(LD_B_ABS, 9, label="v4")
    emit(JEQ_K, 6, jf="reject")
    emit(LD_H_ABS, 6)
    emit(JSET_K, 0x1FFF, jt="reject")
    emit(LDX_B_MSH, 0)
    emit(LD_B_IND, 13)  # the TCP flags
    emit(JA, jt="flags")
    emit(LD_B_ABS, 6, label="v6")
    emit(JEQ_K, 6, jf="reject")
    emit(LD_B_ABS, 40 + 13)
    emit(JSET_K, 0x05, jt="accept", label="flags")  # FIN or RST
    emit(JSET_K, 0x10, jt="reject")  # ACK set: not a connection's first SYN
    emit(JSET_K, 0x02, jt="accept", jf="reject")  # SYN
    emit(RET_K, snaplen, label="accept")
    emit(RET_K, 0, label="reject")
    return _assemble(code.code)


def udp_icmp_filter(snaplen: int = 96, exclude_ports: Sequence[int] = ()) -> list[Insn]:
    """Accept UDP and ICMP over IPv4, UDP and ICMPv6 over IPv6 (headers only), except
    UDP to or from ``exclude_ports`` (DNS, which dns_queries counts already)."""
    code = _Code()
    emit = code.emit
    code.by_family()
    emit(LD_B_ABS, 9, label="v4")
    emit(JEQ_K, 17, jt="v4udp")
    emit(JEQ_K, 1, jt="accept", jf="reject")
    emit(LDX_B_MSH, 0, label="v4udp")
    emit(LD_H_IND, 0)
    for p in exclude_ports:
        emit(JEQ_K, p, jt="reject")
    emit(LD_H_IND, 2)
    for p in exclude_ports:
        emit(JEQ_K, p, jt="reject")
    emit(JA, jt="accept")
    emit(LD_B_ABS, 6, label="v6")
    emit(JEQ_K, 17, jt="v6udp")
    emit(JEQ_K, 58, jt="accept", jf="reject")
    emit(LD_H_ABS, 40, label="v6udp")
    for p in exclude_ports:
        emit(JEQ_K, p, jt="reject")
    emit(LD_H_ABS, 42)
    for p in exclude_ports:
        emit(JEQ_K, p, jt="reject")
    emit(RET_K, snaplen, label="accept")
    emit(RET_K, 0, label="reject")
    return _assemble(code.code)
