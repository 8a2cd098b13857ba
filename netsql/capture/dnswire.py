"""DNS wire-format decoder: header, first question and the answer section.

A hand decoder, about 20x faster than ``dns.message.from_wire`` on typical responses,
because a DNS table sees every message on the wire. ``decode_dns`` never raises on any
input: an undecodable header or question gives None; an answer section that breaks
part-way keeps the answers decoded so far and sets ``malformed``; a record whose data
does not fit its type is kept with generic text (``\\# LEN HEX``) and sets ``malformed``.

Name text follows dnspython's ``Name.to_text(omit_final_dot=True)`` exactly, then
lower-cased: ``.`` for the root, ``\\.`` for a dot inside a label, ``\\"`` style escapes
for ``"().;\\@$`` and ``\\DDD`` (decimal) for bytes outside 0x21-0x7e. Compression
pointers must point strictly backwards, may not overlap the name that uses them, and at
most 16 are followed (dnspython's rules); names are limited to 255 octets on the wire.
"""

from __future__ import annotations

import base64
import socket
import struct
from dataclasses import dataclass, field

__all__ = [
    "CLASS_NAMES", "OPCODE_NAMES", "QTYPE_NAMES", "RCODE_NAMES", "Answer", "DnsMessage",
    "class_name", "decode_dns", "qtype_name", "rcode_name",
]

Answer = tuple[str, int, int, str]
"""(owner name, rtype, ttl, rdata text) for one answer record."""


class _CodeNames(dict[int, str]):
    """int -> mnemonic; an unknown code maps to prefix + number (``TYPE123``)."""

    def __init__(self, prefix: str, names: dict[int, str]) -> None:
        super().__init__(names)
        self.prefix = prefix

    def __missing__(self, key: int) -> str:
        return f"{self.prefix}{key}"


QTYPE_NAMES = _CodeNames("TYPE", {
    1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG", 9: "MR",
    10: "NULL", 11: "WKS", 12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX", 16: "TXT",
    17: "RP", 18: "AFSDB", 19: "X25", 20: "ISDN", 21: "RT", 22: "NSAP", 23: "NSAP-PTR",
    24: "SIG", 25: "KEY", 26: "PX", 27: "GPOS", 28: "AAAA", 29: "LOC", 30: "NXT",
    33: "SRV", 35: "NAPTR", 36: "KX", 37: "CERT", 38: "A6", 39: "DNAME", 41: "OPT",
    42: "APL", 43: "DS", 44: "SSHFP", 45: "IPSECKEY", 46: "RRSIG", 47: "NSEC",
    48: "DNSKEY", 49: "DHCID", 50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA", 53: "SMIMEA",
    55: "HIP", 56: "NINFO", 59: "CDS", 60: "CDNSKEY", 61: "OPENPGPKEY", 62: "CSYNC",
    63: "ZONEMD", 64: "SVCB", 65: "HTTPS", 99: "SPF", 104: "NID", 105: "L32", 106: "L64",
    107: "LP", 108: "EUI48", 109: "EUI64", 249: "TKEY", 250: "TSIG", 251: "IXFR",
    252: "AXFR", 253: "MAILB", 254: "MAILA", 255: "ANY", 256: "URI", 257: "CAA",
    258: "AVC", 259: "DOA", 260: "AMTRELAY", 261: "RESINFO", 32768: "TA", 32769: "DLV",
})
RCODE_NAMES = _CodeNames("RCODE", {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE",
    11: "DSOTYPENI", 16: "BADVERS", 17: "BADKEY", 18: "BADTIME", 19: "BADMODE",
    20: "BADNAME", 21: "BADALG", 22: "BADTRUNC", 23: "BADCOOKIE",
})
CLASS_NAMES = _CodeNames("CLASS", {1: "IN", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"})
OPCODE_NAMES = _CodeNames("OPCODE", {
    0: "QUERY", 1: "IQUERY", 2: "STATUS", 4: "NOTIFY", 5: "UPDATE", 6: "DSO",
})


def qtype_name(code: int) -> str:
    return QTYPE_NAMES[code]


def rcode_name(code: int) -> str:
    return RCODE_NAMES[code]


def class_name(code: int) -> str:
    return CLASS_NAMES[code]


@dataclass(slots=True)
class DnsMessage:
    """One decoded DNS message (header, first question, answer section).

    ``qname`` is '' and ``qtype``/``qclass`` are 0 when the message has no question.
    ``answers`` holds (name, rtype, ttl, rdata_text); ``malformed`` is True when the
    answer section (or a second question) broke off before ANCOUNT records were read,
    or a record's data did not fit its type (that record's text is then generic).
    The rcode is the 4-bit header rcode (an EDNS extended rcode is not applied).
    """

    trans_id: int
    is_response: bool
    opcode: int
    rcode: int
    AA: bool
    TC: bool
    RD: bool
    RA: bool
    qname: str
    qtype: int
    qclass: int
    answers: list[Answer] = field(default_factory=list)
    qdcount: int = 0
    ancount: int = 0
    malformed: bool = False


class _Bad(Exception):
    """Internal: the bytes do not decode; never escapes decode_dns."""


_HDR = struct.Struct("!6H")
_H = struct.Struct("!H")
_HH = struct.Struct("!HH")
_RR = struct.Struct("!HHIH")
_SOA = struct.Struct("!5I")
_SRV = struct.Struct("!3H")
_MAX_HOPS = 16
_ntoa = socket.inet_ntoa
_ntop = socket.inet_ntop
_AF6 = socket.AF_INET6

_SPECIAL = b'"().;\\@$'
# Bytes that may appear unescaped in a name's text, plus the '.' separator (a '.'
# inside a label is caught by counting separators).
_PLAIN = bytes(c for c in range(0x21, 0x7F) if c not in _SPECIAL) + b"."
# str.translate table for labels that need escaping (text decoded as latin-1).
_LABEL_ESC = {c: ("\\" + chr(c) if c in _SPECIAL else f"\\{c:03d}")
              for c in range(256) if c in _SPECIAL or not 0x20 < c < 0x7F}
# dnspython's quoted character-string escaping (TXT and SVCB values).
_QUOTED_ESC = {c: ("\\" + chr(c) if c in b'"\\' else f"\\{c:03d}")
               for c in range(256) if c in b'"\\' or not 0x20 <= c < 0x7F}
_SVCB_KEYS = {0: "mandatory", 1: "alpn", 2: "no-default-alpn", 3: "port", 4: "ipv4hint",
              5: "ech", 6: "ipv6hint", 7: "dohpath", 8: "ohttp", 10: "docpath"}

_NameCache = dict[int, tuple[str, int, int]]


def _name(data: bytes, off: int, end: int, cache: _NameCache) -> tuple[str, int]:
    """Decode the (possibly compressed) name at ``off``, reading no byte at or past
    ``end``. Returns (text, offset just after the name). Raises _Bad/IndexError."""
    first = data[off]
    if first >= 0xC0 and off + 2 <= end:
        # The usual case: a whole-name pointer to a name decoded before.
        ptr = ((first & 0x3F) << 8) | data[off + 1]
        hit = cache.get(ptr)
        if hit is not None and ptr < off and hit[1] <= off and hit[2] < _MAX_HOPS:
            return hit[0], off + 2
    start = seg = off
    lim = end
    after = seg_end = -1
    hops = 0
    wire = 1  # octets on the wire once decompressed, counting the root label
    # A label may end no later than ``stop``: before the bound, and within 255 octets.
    # This bounds the work per name whatever the input (no quadratic blow-up).
    stop = lim - 1 if lim - 1 < seg + 254 else seg + 254
    labels: list[bytes] = []
    append = labels.append
    while True:
        ln = data[off]
        if 0 < ln < 64:
            nxt = off + 1 + ln
            if nxt > stop:
                raise _Bad("label runs past its bounds, or the name is too long")
            append(data[off + 1:nxt])
            off = nxt
            continue
        wire += off - seg
        if ln == 0:
            if off >= lim:
                raise _Bad("name runs past its bounds")
            off += 1
            break
        if ln < 0xC0:
            raise _Bad("bad label type")
        if off + 2 > lim:
            raise _Bad("name runs past its bounds")
        ptr = ((ln & 0x3F) << 8) | data[off + 1]
        if ptr >= seg:
            raise _Bad("compression pointer does not point backwards")
        hops += 1
        if hops > _MAX_HOPS:
            raise _Bad("compression pointer chain too long")
        if after < 0:
            after = seg_end = off + 2
        lim = seg  # the target may not overlap the run that points to it
        seg = off = ptr
        budget = seg + 255 - wire
        stop = lim - 1 if lim - 1 < budget else budget
    if after < 0:
        after = seg_end = off
    if wire > 255:
        raise _Bad("name longer than 255 octets")
    if not labels:
        text = "."
    else:
        raw = b".".join(labels)
        if not raw.translate(None, _PLAIN) and raw.count(b".") == len(labels) - 1:
            text = raw.lower().decode("ascii")
        else:
            text = ".".join([lab.lower().decode("latin-1").translate(_LABEL_ESC)
                             for lab in labels])
    cache[start] = (text, seg_end, hops)
    return text, after


def _quoted(s: bytes) -> str:
    return '"' + s.decode("latin-1").translate(_QUOTED_ESC) + '"'


def _counted_strings(data: bytes, off: int, end: int) -> list[bytes]:
    out = []
    while off < end:
        ln = data[off]
        nxt = off + 1 + ln
        if nxt > end:
            raise _Bad("character-string runs past rdata")
        out.append(data[off + 1:nxt])
        off = nxt
    return out


def _svcb(data: bytes, off: int, end: int, cache: _NameCache) -> str:
    prio = _H.unpack_from(data, off)[0]
    target, off = _name(data, off + 2, end, cache)
    parts = [str(prio), target]
    while off < end:
        key, ln = _HH.unpack_from(data, off)
        off += 4
        vend = off + ln
        if vend > end:
            raise _Bad("SvcParam runs past rdata")
        val = data[off:vend]
        kname = _SVCB_KEYS.get(key) or f"key{key}"
        if key == 0 and ln % 2 == 0:
            keys = struct.unpack(f"!{ln // 2}H", val)
            text = '"' + ",".join(_SVCB_KEYS.get(k) or f"key{k}" for k in keys) + '"'
        elif key == 1:
            ids = [s.replace(b"\\", b"\\\\").replace(b",", b"\\,")
                   for s in _counted_strings(data, off, vend)]
            text = _quoted(b",".join(ids))
        elif key == 3 and ln == 2:
            text = f'"{_H.unpack_from(val)[0]}"'
        elif key == 4 and ln and ln % 4 == 0:
            text = '"' + ",".join(_ntoa(val[i:i + 4]) for i in range(0, ln, 4)) + '"'
        elif key == 6 and ln and ln % 16 == 0:
            text = '"' + ",".join(_ntop(_AF6, val[i:i + 16]) for i in range(0, ln, 16)) + '"'
        elif key == 5:
            text = '"' + base64.b64encode(val).decode("ascii") + '"'
        else:
            text = _quoted(val) if ln else ""
        parts.append(f"{kname}={text}" if text else kname)
        off = vend
    return " ".join(parts)


def _rdata(data: bytes, off: int, end: int, rtype: int, rclass: int,
           cache: _NameCache) -> str:
    """Text of one record's data. A/AAAA: the address; CNAME/NS/PTR/DNAME: the target
    name; MX: 'pref exchange'; SRV: 'prio weight port target'; SOA: 'mname rname serial
    refresh retry expire minimum'; TXT/SPF: quoted strings as dig prints them; SVCB/HTTPS:
    'prio target key=value...'; anything else RFC 3597 generic: '\\# LEN HEX'. A, AAAA,
    SRV, SVCB and HTTPS are decoded for class IN only, as their format is class-specific.
    Raises _Bad (or IndexError, struct.error) when the data does not fit the type."""
    size = end - off
    if rtype == 1 and size == 4 and rclass == 1:
        return _ntoa(data[off:end])
    if rtype == 28 and size == 16 and rclass == 1:
        return _ntop(_AF6, data[off:end])
    if rtype in (5, 2, 12, 39):
        return _name(data, off, end, cache)[0]
    if rtype == 15:
        return f"{_H.unpack_from(data, off)[0]} {_name(data, off + 2, end, cache)[0]}"
    if rtype in (16, 99):
        return " ".join([_quoted(s) for s in _counted_strings(data, off, end)])
    if rtype == 6:
        mname, nxt = _name(data, off, end, cache)
        rname, nxt = _name(data, nxt, end, cache)
        if nxt + 20 > end:
            raise _Bad("short SOA")
        nums = " ".join(map(str, _SOA.unpack_from(data, nxt)))
        return f"{mname} {rname} {nums}"
    if rtype == 33 and rclass == 1:
        prio, weight, port = _SRV.unpack_from(data, off)
        return f"{prio} {weight} {port} {_name(data, off + 6, end, cache)[0]}"
    if rtype in (64, 65) and rclass == 1:
        return _svcb(data, off, end, cache)
    return _generic(data, off, end)


def _generic(data: bytes, off: int, end: int) -> str:
    return f"\\# {end - off} {data[off:end].hex()}" if end > off else "\\# 0"


_BAD = (_Bad, IndexError, struct.error, ValueError, OSError)


def decode_dns(raw: bytes | bytearray | memoryview) -> DnsMessage | None:
    """Decode one DNS message (no TCP length prefix). Never raises; None when the
    header or first question cannot be decoded."""
    try:
        data = raw if type(raw) is bytes else bytes(raw)
    except (TypeError, ValueError):
        return None
    n = len(data)
    if n < 12:
        return None
    tid, flags, qd, an, _ns, _ar = _HDR.unpack_from(data)
    cache: _NameCache = {}
    qname = ""
    qtype = qclass = 0
    off = 12
    if qd:
        try:
            qname, off = _name(data, 12, n, cache)
        except _BAD:
            return None
        if off + 4 > n:
            return None
        qtype, qclass = _HH.unpack_from(data, off)
        off += 4
    answers: list[Answer] = []
    malformed = False
    try:
        for _ in range(qd - 1):
            off = _name(data, off, n, cache)[1] + 4
            if off > n:
                raise _Bad("truncated question")
        append = answers.append
        get = cache.get
        for _ in range(an):
            # Inlined fast paths: owner name as a pointer to a name seen before, A/AAAA.
            c = data[off]
            hit = get(((c & 0x3F) << 8) | data[off + 1]) if c >= 0xC0 else None
            if hit is not None and hit[1] <= off and hit[2] < _MAX_HOPS:
                name = hit[0]
                off += 2
            else:
                name, off = _name(data, off, n, cache)
            rtype, rclass, ttl, rdlen = _RR.unpack_from(data, off)
            off += 10
            rend = off + rdlen
            if rend > n:
                raise _Bad("rdata runs past the message")
            if rtype == 1 and rdlen == 4 and rclass == 1:
                append((name, 1, ttl, _ntoa(data[off:rend])))
            elif rtype == 28 and rdlen == 16 and rclass == 1:
                append((name, 28, ttl, _ntop(_AF6, data[off:rend])))
            else:
                try:
                    text = _rdata(data, off, rend, rtype, rclass, cache)
                except _BAD:  # the record's bounds are known: keep it, as generic data
                    text = _generic(data, off, rend)
                    malformed = True
                append((name, rtype, ttl, text))
            off = rend
    except _BAD:
        malformed = True
    return DnsMessage(tid, bool(flags & 0x8000), (flags >> 11) & 0xF, flags & 0xF,
                      bool(flags & 0x0400), bool(flags & 0x0200), bool(flags & 0x0100),
                      bool(flags & 0x0080), qname, qtype, qclass, answers, qd, an,
                      malformed)
