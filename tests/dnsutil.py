"""Test helpers for the DNS/pcap decoders: dnspython as the reference decoder, frame
builders for every supported link type, and a small hand pcapng writer (for the
features dpkt's writer lacks: nanosecond/binary if_tsresol, big-endian sections,
Simple Packet Blocks, unknown blocks)."""

from __future__ import annotations

import socket
import struct
from typing import Any

import dns.message
import dns.name
import dns.rdata
import dns.rdatatype
import dpkt

from netsql.capture.dnswire import DnsMessage

NAME_TYPES = {dns.rdatatype.CNAME, dns.rdatatype.NS, dns.rdatatype.PTR, dns.rdatatype.DNAME}


def name_text(name: dns.name.Name) -> str:
    """dnspython's text for a name, in the form decode_dns uses."""
    return name.to_text(omit_final_dot=True).lower()


def rdata_text(rd: Any) -> str:
    """dnspython's rdata, rendered the way decode_dns renders it."""
    t = rd.rdtype
    if isinstance(rd, dns.rdata.GenericRdata):
        return f"\\# {len(rd.data)} {rd.data.hex()}" if rd.data else "\\# 0"
    if t in NAME_TYPES:
        return name_text(rd.target)
    if t == dns.rdatatype.MX:
        return f"{rd.preference} {name_text(rd.exchange)}"
    if t == dns.rdatatype.SRV:
        return f"{rd.priority} {rd.weight} {rd.port} {name_text(rd.target)}"
    if t == dns.rdatatype.SOA:
        return (f"{name_text(rd.mname)} {name_text(rd.rname)} {rd.serial} {rd.refresh} "
                f"{rd.retry} {rd.expire} {rd.minimum}")
    if t in (dns.rdatatype.SVCB, dns.rdatatype.HTTPS):
        params = rd.to_text().split(" ", 2)[2:]
        return " ".join([str(rd.priority), name_text(rd.target), *params])
    if t in (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.TXT, dns.rdatatype.SPF):
        return str(rd.to_text())
    data = rd.to_wire()
    return f"\\# {len(data)} {data.hex()}" if data else "\\# 0"


def reference(wire: bytes) -> dict[str, Any]:
    """Every field decode_dns reports, as dnspython decodes ``wire`` (may raise)."""
    m = dns.message.from_wire(wire)
    out: dict[str, Any] = {
        "trans_id": m.id, "is_response": bool(m.flags & 0x8000),
        "opcode": (m.flags >> 11) & 0xF, "rcode": m.flags & 0xF,
        "AA": bool(m.flags & 0x400), "TC": bool(m.flags & 0x200),
        "RD": bool(m.flags & 0x100), "RA": bool(m.flags & 0x80),
        "qname": "", "qtype": 0, "qclass": 0,
    }
    if m.question:
        q = m.question[0]
        out.update(qname=name_text(q.name), qtype=int(q.rdtype), qclass=int(q.rdclass))
    out["answers"] = sorted((name_text(rrset.name), int(rrset.rdtype), rrset.ttl,
                             rdata_text(rd)) for rrset in m.answer for rd in rrset)
    return out


def ours(msg: DnsMessage, dedupe: bool = False) -> dict[str, Any]:
    """The same fields from decode_dns's result (answers sorted, as dnspython groups
    records into rrsets; ``dedupe`` also drops duplicates as dnspython's sets do)."""
    out = {k: getattr(msg, k) for k in ("trans_id", "is_response", "opcode", "rcode", "AA",
                                         "TC", "RD", "RA", "qname", "qtype", "qclass")}
    answers = set(msg.answers) if dedupe else msg.answers
    out["answers"] = sorted(answers)
    return out


# ---- frames -------------------------------------------------------------------------

def pre(wire: bytes) -> bytes:
    """A DNS message with its TCP length prefix."""
    return struct.pack("!H", len(wire)) + wire


def v6(addr: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, addr)


def ip_packet(src: str, dst: str, proto: int, l4: bytes, *, v4_options: bytes = b"",
              v6_ext: bytes = b"", v6_ext_type: int = 0) -> bytes:
    """An IPv4 or IPv6 packet (by the address family of ``src``) carrying ``l4``."""
    if ":" in src:
        nxt = v6_ext_type if v6_ext else proto
        ip6 = dpkt.ip6.IP6(src=v6(src), dst=v6(dst), nxt=nxt, hlim=64,
                           plen=len(v6_ext) + len(l4))
        return bytes(ip6)[:40] + v6_ext + l4
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto,
                    opts=v4_options, data=l4)
    ip.hl = 5 + len(v4_options) // 4  # dpkt does not count the options itself
    return bytes(ip)


def udp_ip(src: str, dst: str, sport: int, dport: int, payload: bytes, **kw: Any) -> bytes:
    udp = dpkt.udp.UDP(sport=sport, dport=dport, ulen=8 + len(payload), data=payload)
    return ip_packet(src, dst, 17, bytes(udp), **kw)


def tcp_ip(src: str, dst: str, sport: int, dport: int, payload: bytes, seq: int,
           flags: int = dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, **kw: Any) -> bytes:
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=1, flags=flags, data=payload)
    return ip_packet(src, dst, 6, bytes(tcp), **kw)


def link_frame(linktype: str, ip: bytes) -> tuple[int, bytes]:
    """Wrap an IP packet for a link layer; returns (pcap linktype, frame)."""
    v6_ = ip[0] >> 4 == 6
    etype = 0x86DD if v6_ else 0x0800
    mac = b"\x02\x00\x00\x00\x00\x01"
    if linktype == "ethernet":
        return 1, bytes(dpkt.ethernet.Ethernet(src=mac, dst=mac, type=etype)) + ip
    if linktype == "vlan":  # 802.1ad outer tag + 802.1Q inner tag
        return 1, mac + mac + struct.pack("!HHHHH", 0x88A8, 100, 0x8100, 200, etype) + ip
    if linktype == "sll":
        return 113, bytes(dpkt.sll.SLL(type=0, hrd=772, hlen=6, hdr=mac, ethtype=etype)) + ip
    if linktype == "sll2":
        hdr = dpkt.sll2.SLL2(ethtype=etype, intindex=1, hrd=772, type=0, hlen=6, hdr=mac)
        return 276, bytes(hdr) + ip
    if linktype == "null":  # BSD loopback, family in host (here: little-endian) order
        return 0, struct.pack("<I", 30 if v6_ else 2) + ip
    if linktype == "null-be":
        return 0, struct.pack(">I", 24 if v6_ else 2) + ip
    if linktype == "raw":
        return 101, ip
    if linktype == "raw-specific":
        return (229 if v6_ else 228), ip
    raise ValueError(linktype)


LINK_TYPES = ["ethernet", "vlan", "sll", "sll2", "null", "null-be", "raw", "raw-specific"]


# ---- a hand pcapng writer -------------------------------------------------------------

def _block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    blen = len(body) + 12
    return struct.pack(order + "II", btype, blen) + body + struct.pack(order + "I", blen)


def _option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def png_shb(order: str = "<") -> bytes:
    return _block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def png_idb(order: str, linktype: int, name: str | None = None, tsresol: int | None = None,
            tsoffset: int = 0, snaplen: int = 0) -> bytes:
    opts = b""
    if name is not None:
        opts += _option(order, 2, name.encode())
    if tsresol is not None:
        opts += _option(order, 9, bytes([tsresol]))
    if tsoffset:
        opts += _option(order, 14, struct.pack(order + "q", tsoffset))
    if opts:
        opts += _option(order, 0, b"")
    return _block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + opts)


def png_epb(order: str, iface: int, units: int, frame: bytes) -> bytes:
    head = struct.pack(order + "5I", iface, units >> 32, units & 0xFFFFFFFF, len(frame),
                       len(frame))
    return _block(order, 6, head + frame)


def png_spb(order: str, frame: bytes) -> bytes:
    return _block(order, 3, struct.pack(order + "I", len(frame)) + frame)


def png_unknown(order: str) -> bytes:
    return _block(order, 0x0BAD, b"custom data")
