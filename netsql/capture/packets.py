"""Link, IP and transport decoding of captured frames, and DNS-over-TCP reassembly.

``decode_frame`` takes a pcap link type and a frame and returns the IP addresses, ports,
transport and payload of a UDP or TCP packet, or None for anything else (ARP, ICMP,
unknown link types, truncated or malformed headers). It never raises.

Link types: 0 NULL/loopback (4-byte family in the capturing host's byte order; either
order is accepted; AF_INET 2, AF_INET6 10/24/28/30), 1 Ethernet (with any number of
802.1Q/802.1ad/QinQ tags), 12/14/101/228/229 raw IP, 108 OpenBSD loopback (family in
network order), 113 Linux cooked (SLL), 276 Linux cooked v2 (SLL2).

IPv4: header options are skipped; a non-first fragment is ignored (its bytes carry no
transport header); a first fragment is decoded with whatever payload it carries; a total
length of 0 (TCP segmentation offload, seen on the sending host) means "to frame end".
IPv6: hop-by-hop, routing, destination-options, fragment and AH extension headers are
skipped; a non-first fragment is ignored. Payloads are cut to the IP and UDP lengths.
"""

from __future__ import annotations

import socket
import struct
from collections import OrderedDict

__all__ = ["FrameInfo", "TcpDnsReassembler", "decode_frame", "TCP_FIN", "TCP_SYN",
           "TCP_RST", "TCP_ACK"]

FrameInfo = tuple[str, str, int, int, str, bytes, int | None, int | None]
"""(src_ip, dst_ip, sport, dport, 'udp'|'tcp', payload, tcp_flags, tcp_seq)."""

TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10

_ntoa = socket.inet_ntoa
_ntop = socket.inet_ntop
_AF6 = socket.AF_INET6
_HHI = struct.Struct("!HHI")
_H = struct.Struct("!H")
_VLAN = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))
_V6_EXT = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options
_RAW_IP = frozenset((12, 14, 101, 228, 229))
_AF_V6 = frozenset((10, 24, 28, 30))


def decode_frame(linktype: int, frame: bytes) -> FrameInfo | None:
    """Decode a UDP or TCP packet from a captured frame; None for anything else."""
    try:
        if linktype == 1:
            etype = frame[12] << 8 | frame[13]
            off = 14
            while etype in _VLAN:
                etype = frame[off + 2] << 8 | frame[off + 3]
                off += 4
        elif linktype == 113:
            etype = frame[14] << 8 | frame[15]
            off = 16
        elif linktype == 276:
            etype = frame[0] << 8 | frame[1]
            off = 20
        elif linktype in _RAW_IP:
            ver = frame[0] >> 4
            etype = 0x0800 if ver == 4 else 0x86DD if ver == 6 else 0
            off = 0
        elif linktype == 0 or linktype == 108:
            fam = int.from_bytes(frame[:4], "little")
            if fam > 0xFFFF:  # written in big-endian order
                fam = int.from_bytes(frame[:4], "big")
            etype = 0x0800 if fam == 2 else 0x86DD if fam in _AF_V6 else 0
            off = 4
        else:
            return None
        if etype == 0x0800:
            return _ipv4(frame, off)
        if etype == 0x86DD:
            return _ipv6(frame, off)
        return None
    except (IndexError, struct.error, ValueError, TypeError):
        return None


_IP4 = struct.Struct("!BxHxxHxB2x4s4s")  # ver/ihl, total length, frag, proto, src, dst
_IP6 = struct.Struct("!4xHBx16s16s")  # payload length, next header, src, dst
_HHH = struct.Struct("!HHH")
# Address text by packed address: a capture sees few distinct addresses, and a dict
# lookup is several times cheaper than inet_ntop. Bounded: cleared when it fills up.
_ADDR: dict[bytes, str] = {}
_ADDR_MAX = 1 << 16


def _addr(packed: bytes) -> str:
    if len(_ADDR) >= _ADDR_MAX:
        _ADDR.clear()
    text = _ADDR[packed] = _ntoa(packed) if len(packed) == 4 else _ntop(_AF6, packed)
    return text


def _ipv4(frame: bytes, off: int) -> FrameInfo | None:
    vihl, total, frag, proto, s, d = _IP4.unpack_from(frame, off)
    ihl = (vihl & 0x0F) * 4
    if total == 0:  # TCP segmentation offload: the length is filled in later
        total = len(frame) - off
    if vihl >> 4 != 4 or ihl < 20 or total < ihl:
        return None
    if frag & 0x1FFF:
        return None  # non-first fragment
    end = off + total
    if end > len(frame):
        end = len(frame)
    return _transport(frame, off + ihl, end, proto, _ADDR.get(s) or _addr(s),
                      _ADDR.get(d) or _addr(d))


def _ipv6(frame: bytes, off: int) -> FrameInfo | None:
    if frame[off] >> 4 != 6:
        return None
    plen, nh, s, d = _IP6.unpack_from(frame, off)
    end = min(off + 40 + plen, len(frame))
    off += 40
    for _ in range(8):
        if nh == 6 or nh == 17:
            return _transport(frame, off, end, nh, _ADDR.get(s) or _addr(s),
                              _ADDR.get(d) or _addr(d))
        if nh in _V6_EXT:
            nh, off = frame[off], off + (frame[off + 1] + 1) * 8
        elif nh == 44:
            if (frame[off + 2] << 8 | frame[off + 3]) & 0xFFF8:
                return None  # non-first fragment
            nh, off = frame[off], off + 8
        elif nh == 51:
            nh, off = frame[off], off + (frame[off + 1] + 2) * 4
        else:
            return None
    return None


def _transport(frame: bytes, off: int, end: int, proto: int, src: str,
               dst: str) -> FrameInfo | None:
    if proto == 17:
        if off + 8 > end:
            return None
        sport, dport, ulen = _HHH.unpack_from(frame, off)
        if 8 <= ulen and off + ulen < end:
            end = off + ulen
        return src, dst, sport, dport, "udp", frame[off + 8:end], None, None
    if proto == 6:
        if off + 20 > end:
            return None
        sport, dport, seq = _HHI.unpack_from(frame, off)
        doff = (frame[off + 12] >> 4) * 4
        if doff < 20 or off + doff > end:
            return None
        flags = frame[off + 13] | (frame[off + 12] & 1) << 8
        return src, dst, sport, dport, "tcp", frame[off + doff:end], flags, seq
    return None


_FlowKey = tuple[str, int, str, int]


class _Flow:
    __slots__ = ("next_seq", "buf", "skip")

    def __init__(self) -> None:
        self.next_seq: int | None = None
        self.buf = bytearray()
        self.skip = 0


class TcpDnsReassembler:
    """Turns TCP payloads into whole DNS messages (RFC 1035 2-byte length prefix).

    One buffer per direction (src, sport, dst, dport). Segments are assumed to arrive
    in order; a segment that is wholly old (a retransmission) is dropped and one that
    overlaps old data is trimmed, by sequence number. After a gap the buffer is thrown
    away and the next segment is taken as the start of a message (best effort).
    SYN starts a flow afresh (data on a SYN, as with TCP Fast Open, is kept); FIN ends
    it after its data is used; RST drops it. Memory is bounded: a message longer than
    ``max_message`` is skipped rather than buffered, and at most ``max_flows`` flows are
    kept (the least recently used is evicted), so at most about
    ``max_flows * (max_message + 2)`` bytes are held.
    """

    def __init__(self, max_flows: int = 1024, max_message: int = 65535) -> None:
        self.max_flows = max_flows
        self.max_message = max_message
        self._flows: OrderedDict[_FlowKey, _Flow] = OrderedDict()
        self.messages = 0
        self.skipped_messages = 0
        self.gaps = 0
        self.evicted_flows = 0

    def __len__(self) -> int:
        return len(self._flows)

    def buffered_bytes(self) -> int:
        return sum(len(f.buf) for f in self._flows.values())

    def feed(self, src: str, dst: str, sport: int, dport: int, payload: bytes,
             flags: int | None = 0, seq: int | None = None) -> list[bytes]:
        """Take one segment; return the DNS messages (without prefix) it completes."""
        flags = flags or 0
        key = (src, sport, dst, dport)
        flows = self._flows
        if flags & TCP_RST:
            flows.pop(key, None)
            return []
        flow = flows.get(key)
        if flags & TCP_SYN or flow is None:
            if not payload and not flags & TCP_SYN:
                return []
            flow = flows[key] = _Flow()
            flows.move_to_end(key)
            if len(flows) > self.max_flows:
                flows.popitem(last=False)
                self.evicted_flows += 1
            if flags & TCP_SYN and seq is not None:
                flow.next_seq = (seq + 1) & 0xFFFFFFFF
        else:
            flows.move_to_end(key)
        out: list[bytes] = []
        if payload:
            if flags & TCP_SYN and seq is not None:
                seq = (seq + 1) & 0xFFFFFFFF  # data on a SYN follows the SYN's own number
            self._data(flow, payload, seq, out)
        if flags & TCP_FIN:
            flows.pop(key, None)
        return out

    def _data(self, flow: _Flow, data: bytes, seq: int | None, out: list[bytes]) -> None:
        if seq is not None:
            expected = flow.next_seq
            flow.next_seq = (seq + len(data)) & 0xFFFFFFFF
            if expected is not None and seq != expected:
                behind = (expected - seq) & 0xFFFFFFFF
                if behind < 0x80000000:  # retransmission of bytes already seen
                    if behind >= len(data):
                        flow.next_seq = expected
                        return
                    data = data[behind:]
                else:  # a gap: bytes were lost, message boundaries are unknown
                    self.gaps += 1
                    flow.buf.clear()
                    flow.skip = 0
        if flow.skip:
            cut = min(flow.skip, len(data))
            flow.skip -= cut
            data = data[cut:]
        buf = flow.buf
        buf += data
        while len(buf) >= 2:
            size = buf[0] << 8 | buf[1]
            if size > self.max_message:
                dropped = min(len(buf), size + 2)
                del buf[:dropped]
                flow.skip = size + 2 - dropped
                self.skipped_messages += 1
                continue
            if len(buf) < size + 2:
                break
            if size:
                out.append(bytes(buf[2:size + 2]))
                self.messages += 1
            del buf[:size + 2]
