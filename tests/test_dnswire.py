"""decode_dns against dnspython (differential), plus fuzzing of the DNS decoder, the
frame decoder and the DNS-over-TCP reassembler."""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netsql.capture.dnswire import (
    CLASS_NAMES,
    OPCODE_NAMES,
    QTYPE_NAMES,
    RCODE_NAMES,
    DnsMessage,
    decode_dns,
)
from netsql.capture.packets import TcpDnsReassembler, decode_frame
from tests.dnsutil import ours, pre, reference

IN = dns.rdataclass.IN
FAST = settings(max_examples=2500, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def rd(rdtype: str, text: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text(IN, rdtype, text)


def response(qname: str | dns.name.Name, qtype: str = "A",
             answers: Sequence[tuple[str | dns.name.Name, int, dns.rdata.Rdata]] = (),
             rcode: int = 0, flags: int = 0, qid: int | None = None) -> dns.message.Message:
    q = dns.message.make_query(qname, qtype, id=qid)
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.Rcode(rcode))
    r.flags |= flags
    for owner, ttl, rdata in answers:
        name = dns.name.from_text(owner) if isinstance(owner, str) else owner
        rrset = r.find_rrset(r.answer, name, IN, rdata.rdtype, create=True)
        rrset.add(rdata, ttl)
    return r


ODD = dns.name.Name([b"a\x00b", b"c.d", b"sp ace", b'"q"', b"\xff\xfe", b"@$;()\\", b"UP",
                     b"ex", b""])


def corpus() -> list[bytes]:
    """Hand-picked messages covering each decoded record type and awkward names."""
    www = "www.example.com"
    msgs = [
        dns.message.make_query("WWW.Example.COM", "A"),
        dns.message.make_query(www, "AAAA", use_edns=0, want_dnssec=True),
        dns.message.make_query(".", "NS"),
        dns.message.make_query(ODD, "TXT"),
        dns.message.make_query("xn--bcher-kva.example", "HTTPS"),
        dns.message.make_query("4.3.2.1.in-addr.arpa", "PTR"),
        dns.message.make_query("x.example", dns.rdatatype.RdataType(65280)),
        response(www, "A", [(www, 300, rd("A", "93.184.216.34"))], flags=dns.flags.RA),
        response(www, "AAAA", [(www, 60, rd("AAAA", "2606:2800:220:1:248:1893:25c8:1946")),
                               (www, 60, rd("AAAA", "::ffff:1.2.3.4")),
                               (www, 60, rd("AAAA", "::1"))]),
        response("www.google-analytics.com", "A", [
            ("www.google-analytics.com", 300, rd("CNAME", "www-google-analytics.l.google.com.")),
            ("www-google-analytics.l.google.com", 300, rd("CNAME", "x.l.google.com.")),
            ("x.l.google.com", 60, rd("A", "142.250.74.46")),
            ("x.l.google.com", 60, rd("A", "142.250.74.47"))]),
        response("example.com", "MX", [("example.com", 3600, rd("MX", "10 mail.Example.com.")),
                                       ("example.com", 3600, rd("MX", "0 ."))]),
        response("example.com", "TXT", [("example.com", 5, rd(
            "TXT", '"v=spf1 -all" "quote\\" back\\\\slash" "\\000\\255 bytes" ""'))]),
        response("_sip._tcp.example.com", "SRV",
                 [("_sip._tcp.example.com", 86400, rd("SRV", "10 60 5060 sip.example.com."))]),
        response("example.com", "NS", [("example.com", 172800, rd("NS", "a.iana-servers.net.")),
                                       ("example.com", 172800, rd("NS", "b.iana-servers.net."))]),
        response("4.3.2.1.in-addr.arpa", "PTR",
                 [("4.3.2.1.in-addr.arpa", 10, rd("PTR", "host.example."))]),
        response("x.example.com", "A", [("example.com", 10, rd("DNAME", "example.net."))]),
        response("example.com", "SOA", [("example.com", 3600, rd(
            "SOA", "ns.icann.org. noc.dns.icann.org. 2024010101 7200 3600 1209600 3600"))]),
        response("example.com", "HTTPS", [("example.com", 300, rd(
            "HTTPS", '1 . alpn="h2,h3" port=443 ipv4hint=1.2.3.4,5.6.7.8 '
                     'ipv6hint=2001:db8::1 ech=AAj+DQAEYWJjZA=='))]),
        response("svc.example", "SVCB", [("svc.example", 300, rd(
            "SVCB", '2 svc1.example. mandatory=alpn,port alpn="a\\\\,b,c" no-default-alpn '
                    'port=8443 key65000="x y"'))]),
        response("example.com", "CAA",
                 [("example.com", 300, rd("CAA", '0 issue "letsencrypt.org"'))]),
        response(ODD, "TXT", [(ODD, 1, rd("TXT", '"odd"')),
                              (ODD, 1, rd("CNAME", "a\\.b.\\000.example."))]),
        response(".", "NS", [(".", 518400, rd("NS", "a.root-servers.net."))]),
        response("a." * 60 + "example", "A", [("a." * 60 + "example", 1, rd("A", "10.0.0.1"))]),
        response("nx.example.com", "A", rcode=dns.rcode.NXDOMAIN,
                 flags=dns.flags.AA | dns.flags.RA),
        response("big.example", "A", flags=dns.flags.TC),
        response("fail.example", "A", rcode=dns.rcode.SERVFAIL),
        response("refused.example", "A", rcode=dns.rcode.REFUSED),
    ]
    nx = msgs[-4]
    nx.authority.append(dns.rrset.from_text(
        "example.com.", 3600, "IN", "SOA", "ns.example.com. h.example.com. 1 2 3 4 5"))
    notify = dns.message.make_query("example.com", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    msgs.append(notify)
    noq = dns.message.make_response(dns.message.make_query("example.com", "A"))
    noq.question = []
    msgs.append(noq)
    return [m.to_wire() for m in msgs]


CORPUS = corpus()


@pytest.mark.parametrize("wire", CORPUS, ids=range(len(CORPUS)))
def test_corpus_matches_dnspython(wire: bytes) -> None:
    msg = decode_dns(wire)
    assert msg is not None and not msg.malformed
    assert ours(msg) == reference(wire)


def test_field_details() -> None:
    msg = decode_dns(CORPUS[3])
    assert msg is not None
    assert msg.qname == 'a\\000b.c\\.d.sp\\032ace.\\"q\\".\\255\\254.\\@\\$\\;\\(\\)\\\\.up.ex'
    assert decode_dns(CORPUS[2]).qname == "."  # type: ignore[union-attr]
    assert decode_dns(CORPUS[-1]).qname == ""  # type: ignore[union-attr]
    https = decode_dns(CORPUS[17])
    assert https is not None
    assert https.answers[0][3] == ('1 . alpn="h2,h3" port="443" ipv4hint="1.2.3.4,5.6.7.8" '
                                   'ech="AAj+DQAEYWJjZA==" ipv6hint="2001:db8::1"')
    mx = decode_dns(CORPUS[10])
    assert mx is not None and sorted(a[3] for a in mx.answers) == ["0 .", "10 mail.example.com"]
    cname = decode_dns(CORPUS[9])
    assert cname is not None and cname.answers[0] == (
        "www.google-analytics.com", 5, 300, "www-google-analytics.l.google.com")
    caa = decode_dns(CORPUS[19])
    assert caa is not None and caa.answers[0][3].startswith("\\# 22 0005697373756")


def test_code_names_agree_with_dnspython() -> None:
    for t in dns.rdatatype.RdataType:
        if int(t) in QTYPE_NAMES:
            assert QTYPE_NAMES[int(t)] == dns.rdatatype.to_text(t)
    for code in range(24):
        if code in RCODE_NAMES and code != 16:  # 16 is BADVERS and BADSIG
            assert RCODE_NAMES[code] == dns.rcode.to_text(dns.rcode.Rcode(code))
    assert QTYPE_NAMES[28] == "AAAA" and QTYPE_NAMES[123] == "TYPE123"
    assert RCODE_NAMES[3] == "NXDOMAIN" and RCODE_NAMES[12] == "RCODE12"
    assert CLASS_NAMES[1] == "IN" and CLASS_NAMES[3] == "CH" and CLASS_NAMES[7] == "CLASS7"
    assert OPCODE_NAMES[4] == "NOTIFY" and OPCODE_NAMES[9] == "OPCODE9"


# ---- generated messages ---------------------------------------------------------------

_LDH = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
_ascii_label = st.text(_LDH, min_size=1, max_size=12).map(str.encode)
_label = st.one_of(_ascii_label, _ascii_label, st.binary(min_size=1, max_size=63))
_suffixes = [dns.name.from_text(s) for s in ("example.com", "l.google.com", "Example.COM", ".")]


@st.composite
def names(draw: st.DrawFn) -> dns.name.Name:
    prefix = draw(st.lists(_label, max_size=4))
    suffix = draw(st.sampled_from(_suffixes))
    labels = [*prefix, *suffix.labels]
    if sum(len(label) + 1 for label in labels) > 255:
        labels = list(suffix.labels)
    return dns.name.Name(labels)


@st.composite
def rdatas(draw: st.DrawFn) -> dns.rdata.Rdata:
    kind = draw(st.sampled_from(["A", "AAAA", "CNAME", "NS", "PTR", "MX", "TXT", "SRV", "SOA",
                                 "HTTPS", "DNAME", "SSHFP"]))
    u16 = st.integers(0, 65535)
    if kind == "A":
        return rd("A", str(draw(st.ip_addresses(v=4))))
    if kind == "AAAA":
        return rd("AAAA", str(draw(st.ip_addresses(v=6))))
    if kind in ("CNAME", "NS", "PTR", "DNAME"):
        return rd(kind, draw(names()).to_text())
    if kind == "MX":
        return rd("MX", f"{draw(u16)} {draw(names()).to_text()}")
    if kind == "SRV":
        return rd("SRV", f"{draw(u16)} {draw(u16)} {draw(u16)} {draw(names()).to_text()}")
    if kind == "SOA":
        nums = " ".join(str(draw(st.integers(0, 2**32 - 1))) for _ in range(5))
        return rd("SOA", f"{draw(names()).to_text()} {draw(names()).to_text()} {nums}")
    if kind == "TXT":
        strings = draw(st.lists(st.binary(max_size=40), min_size=1, max_size=3))
        return dns.rdata.from_wire(IN, dns.rdatatype.TXT,
                                   b"".join(bytes([len(s)]) + s for s in strings), 0,
                                   sum(len(s) + 1 for s in strings))
    if kind == "SSHFP":
        return rd("SSHFP", f"1 1 {draw(st.binary(min_size=20, max_size=20)).hex()}")
    alpn = ",".join(draw(st.lists(st.sampled_from(["h2", "h3", "http/1.1"]), min_size=1,
                                  max_size=3, unique=True)))
    v4 = ",".join(str(a) for a in draw(st.lists(st.ip_addresses(v=4), min_size=1, max_size=3)))
    return rd("HTTPS", f'{draw(st.integers(1, 65535))} {draw(names()).to_text()} alpn="{alpn}" '
                       f"port={draw(u16)} ipv4hint={v4}")


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    qtype = draw(st.sampled_from(["A", "AAAA", "HTTPS", "MX", "TXT", "ANY", "TYPE65280"]))
    qname = draw(names())
    answers = []
    ttls: dict[tuple[dns.name.Name, int], int] = {}
    for owner, rdata in draw(st.lists(st.tuples(names(), rdatas()), max_size=6)):
        ttl = ttls.setdefault((owner, rdata.rdtype), draw(st.integers(0, 2**31 - 1)))
        answers.append((owner, ttl, rdata))
    msg = response(qname, qtype, answers, rcode=draw(st.integers(0, 15)),
                   flags=draw(st.sampled_from([0, dns.flags.AA, dns.flags.TC, dns.flags.RA])),
                   qid=draw(st.integers(0, 65535)))
    if draw(st.booleans()):
        msg.use_edns(0, 0, 1232)
    return bytes(msg.to_wire(want_shuffle=False))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_generated_messages_match_dnspython(wire: bytes) -> None:
    msg = decode_dns(wire)
    assert msg is not None and not msg.malformed
    assert ours(msg, dedupe=True) == reference(wire)


# ---- fuzzing --------------------------------------------------------------------------

COMPARABLE = {1, 2, 5, 6, 12, 15, 16, 28, 33, 39}


def agree_if_both_parse(wire: bytes) -> DnsMessage | None:
    """decode_dns must not raise; where dnspython also parses, the fields must agree."""
    msg = decode_dns(wire)
    assert msg is None or isinstance(msg, DnsMessage)
    try:
        ref = reference(wire)
    except (dns.exception.DNSException, ValueError, TypeError, UnicodeError, IndexError):
        return msg
    assert msg is not None
    got = ours(msg, dedupe=True)
    for key in ("trans_id", "is_response", "opcode", "rcode", "qname", "qtype", "qclass"):
        assert got[key] == ref[key], key
    assert not msg.malformed
    # dnspython merges same-name records (lowest TTL wins), so compare without TTLs,
    # and only for class IN records of the types decoded to text.
    if all(rrset.rdclass == dns.rdataclass.IN for rrset in dns.message.from_wire(wire).answer):
        mine = {a[:2] + a[3:] for a in got["answers"] if a[1] in COMPARABLE}
        theirs = {a[:2] + a[3:] for a in ref["answers"] if a[1] in COMPARABLE}
        assert mine == theirs
    return msg


@FAST
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    agree_if_both_parse(data)


@FAST
@given(st.binary(min_size=4, max_size=4), st.binary(max_size=300))
def test_random_body_after_plausible_header(head: bytes, body: bytes) -> None:
    agree_if_both_parse(head + struct.pack("!HHHH", 1, 2, 0, 0) + body)


def test_every_truncation() -> None:
    for wire in CORPUS:
        full = decode_dns(wire)
        assert full is not None
        for n in range(len(wire)):
            msg = agree_if_both_parse(wire[:n])
            if msg is not None:
                assert (msg.trans_id, msg.qname, msg.qtype) == (
                    full.trans_id, full.qname, full.qtype)
                assert msg.answers == full.answers[:len(msg.answers)]


@FAST
@given(st.sampled_from(CORPUS), st.lists(st.integers(0, 1 << 16), min_size=1, max_size=4))
def test_bit_flips(wire: bytes, flips: list[int]) -> None:
    buf = bytearray(wire)
    for f in flips:
        buf[(f >> 3) % len(buf)] ^= 1 << (f & 7)
    agree_if_both_parse(bytes(buf))


HEADER = struct.pack("!6H", 0x1234, 0x8180, 1, 1, 0, 0)


@pytest.mark.parametrize("body", [
    b"\xc0\x0c\x00\x01\x00\x01",                       # pointer to itself
    b"\xc0\x0e\xc0\x0c\x00\x01\x00\x01",               # two pointers to each other
    b"\x01a\xc0\x0c\x00\x01\x00\x01",                  # label, then back to its own start
    b"\xc0\x20\x00\x01\x00\x01" + b"\x00" * 30,        # forward pointer
    b"\x3fabc",                                         # label longer than the message
    b"\x03abc",                                         # no terminating label
    b"\x41abc\x00\x00\x01\x00\x01",                    # label type 01 (reserved)
    b"\x81abc\x00\x00\x01\x00\x01",                    # label type 10 (reserved)
    b"\xc0",                                            # half a pointer
    b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63 + b"\x3f" + b"d" * 63
    + b"\x00\x00\x01\x00\x01",                          # 257 octets: name too long
])
def test_bad_question_names(body: bytes) -> None:
    assert decode_dns(HEADER + body) is None
    with pytest.raises(dns.exception.DNSException):
        dns.message.from_wire(HEADER + body)


def test_pointer_chain_limit() -> None:
    # Question "a" at 12; then answers whose names are each a label plus a pointer to
    # the previous answer's name: chains get one hop longer per record.
    body = bytearray(HEADER[:6] + struct.pack("!HHH", 20, 0, 0) + b"\x01a\x00\x00\x01\x00\x01")
    prev = 12
    for i in range(20):
        here = len(body)
        body += b"\x01" + bytes([97 + i]) + struct.pack("!H", 0xC000 | prev)
        body += struct.pack("!HHIH", 1, 1, 60, 4) + bytes([10, 0, 0, i])
        prev = here
    msg = decode_dns(bytes(body))
    assert msg is not None and msg.malformed and len(msg.answers) == 16
    assert msg.answers[15][0] == ".".join(chr(97 + i) for i in range(15, -1, -1)) + ".a"
    with pytest.raises(dns.exception.DNSException):
        dns.message.from_wire(bytes(body))


def test_name_length_limit() -> None:
    longest = [b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 61]  # 255 octets with the root
    wire = HEADER[:4] + struct.pack("!4H", 1, 0, 0, 0) + b"".join(
        bytes([len(x)]) + x for x in longest) + b"\x00\x00\x01\x00\x01"
    msg = decode_dns(wire)
    assert msg is not None and ours(msg) == reference(wire)
    assert msg.qname == ".".join(x.decode() for x in longest)
    # The same name, but reached through a pointer after a 1-octet label: 257 octets.
    body = wire[12:-4] + b"\x01x\xc0\x0c\x00\x01\x00\x01"
    over = wire[:4] + struct.pack("!4H", 2, 0, 0, 0) + body
    assert decode_dns(over).malformed  # type: ignore[union-attr]
    with pytest.raises(dns.exception.DNSException):
        dns.message.from_wire(over)


def test_hostile_message_is_decoded_in_bounded_time() -> None:
    """Thousands of CNAMEs pointing at a 4,000-label run: each must fail fast (after at
    most 255 octets), not scan the whole run."""
    run = b"\x01a" * 4000 + b"\x00"
    blob = b"\xc0\x0c" + struct.pack("!HHIH", 10, 1, 0, len(run)) + run  # a NULL record
    target = 12 + 5 + 12  # header, question "q", the NULL record's fixed part
    rec = b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 0, 2) + struct.pack("!H", 0xC000 | target)
    count = (65000 - len(blob)) // len(rec)
    wire = (struct.pack("!6H", 1, 0x8180, 1, count + 1, 0, 0) + b"\x01q\x00\x00\x01\x00\x01"
            + blob + rec * count)
    start = time.perf_counter()
    msg = decode_dns(wire)
    elapsed = time.perf_counter() - start
    assert msg is not None and msg.malformed and len(msg.answers) == count + 1
    assert msg.answers[1] == ("q", 5, 0, f"\\# 2 {0xC000 | target:04x}")
    assert elapsed < 0.5, elapsed


def test_non_bytes_input() -> None:
    wire = CORPUS[7]
    assert decode_dns(bytearray(wire)) == decode_dns(memoryview(wire)) == decode_dns(wire)
    assert decode_dns(b"") is None and decode_dns(b"\x00" * 11) is None


# ---- frames and TCP reassembly never raise ------------------------------------------

@FAST
@given(st.sampled_from([0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 999]),
       st.binary(max_size=120))
def test_decode_frame_random(linktype: int, frame: bytes) -> None:
    out = decode_frame(linktype, frame)
    assert out is None or (len(out) == 8 and out[4] in ("udp", "tcp"))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.binary(max_size=40), st.integers(0, 0x1FF),
                          st.integers(0, 2**32 - 1), st.integers(0, 3)), max_size=30))
def test_reassembler_random_segments(segments: list[tuple[bytes, int, int, int]]) -> None:
    r = TcpDnsReassembler(max_flows=2, max_message=100)
    for payload, flags, seq, flow in segments:
        for msg in r.feed("10.0.0.1", "10.0.0.2", 1000 + flow, 53, payload, flags, seq):
            assert 0 < len(msg) <= 100
    assert len(r) <= 2 and r.buffered_bytes() <= 2 * 102


def test_reassembler_stream_split_anywhere() -> None:
    """The same stream, cut into random segments, always yields the same messages."""
    wires = CORPUS[:12]
    stream = b"".join(struct.pack("!H", len(w)) + w for w in wires)
    rng = random.Random(7)
    for _ in range(300):
        r = TcpDnsReassembler()
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 30)))
        out: list[bytes] = []
        seq = 1000
        for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            out += r.feed("::1", "::1", 5353, 53, stream[a:b], 0x18, seq)
            if rng.random() < 0.2:  # a retransmission, sometimes with extra bytes
                out += r.feed("::1", "::1", 5353, 53, stream[a:b], 0x18, seq)
            seq += b - a
        assert out == wires


def test_reassembler_syn_data_gap_and_limits() -> None:
    q1, q2, q3 = CORPUS[0], CORPUS[1], CORPUS[2]
    r = TcpDnsReassembler(max_flows=2, max_message=80)
    # TCP Fast Open: the query rides on the SYN (sequence number ISN + 1).
    assert r.feed("10.0.0.1", "10.0.0.2", 999, 53, pre(q1), 0x02, 5000) == [q1]
    nxt = 5001 + len(pre(q1))
    # A lost segment: the half message before it is dropped, the next one is taken.
    assert r.feed("10.0.0.1", "10.0.0.2", 999, 53, pre(q2)[:10], 0x18, nxt) == []
    assert r.feed("10.0.0.1", "10.0.0.2", 999, 53, pre(q3), 0x18, nxt + 500) == [q3]
    assert r.gaps == 1
    # A message longer than max_message is skipped without being buffered.
    big = CORPUS[9]
    assert len(big) > 80 and max(map(len, (q1, q2, q3))) <= 80
    stream = pre(big) + pre(q1)
    assert r.feed("10.0.0.3", "10.0.0.2", 7, 53, stream[:30], 0x18, 1) == []
    assert r.buffered_bytes() == 0
    assert r.feed("10.0.0.3", "10.0.0.2", 7, 53, stream[30:], 0x18, 31) == [q1]
    assert r.skipped_messages == 1
    # A third flow evicts the least recently used; RST and FIN drop their flow.
    r.feed("10.0.0.4", "10.0.0.2", 8, 53, b"\x00", 0x18, 1)
    assert len(r) == 2 and r.evicted_flows == 1
    r.feed("10.0.0.4", "10.0.0.2", 8, 53, b"", 0x04, 2)
    r.feed("10.0.0.3", "10.0.0.2", 7, 53, b"", 0x11, 31 + len(stream) - 30)
    assert len(r) == 0
