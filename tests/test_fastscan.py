"""The compiled pcap scanners (netsql/capture/_cscan.c: scan_pcap, record by record,
and scan_pcap_threads, ranges parsed on threads and paired in C) against the
pure-Python scan (fastscan.Scan.feed): the same capture files must give the same rows,
counters and errors, whichever columns a statement wants, wherever the ranges and
reads split the file. The Python scan is itself checked against dpkt and dnspython in
test_pcapfile.py and test_dns_pcap.py."""

from __future__ import annotations

import io
import struct
from typing import Any

import dpkt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netsql.capture import fastscan
from netsql.capture.fastscan import Scan
from netsql.capture.pcapfile import CaptureFileError, CaptureReader
from tests.conftest import need
from tests.dnsutil import LINK_TYPES, link_frame, udp_ip
from tests.mutate import Edit, apply_edits, edits
from tests.test_pcapfile import BASE_TS, Trickle, scenario

WANTS: list[frozenset[str] | None] = [  # header only, question, answers, everything
    frozenset(), frozenset({"rcode", "flags", "client_port"}), frozenset({"query"}),
    frozenset({"qtype", "qclass", "rcode"}), frozenset({"answers"}), None]
C, S = "192.0.2.1", "198.51.100.53"
C6, S6 = "2001:db8::1", "2001:db8::53"


def pcap(records: list[tuple[float, int, bytes]], order: str = "<", nano: bool = False,
         modified: bool = False) -> bytes:
    """A classic pcap file; the link type is the first record's (all must share it)."""
    magic = 0xA1B23C4D if nano else (0xA1B2CD34 if modified else 0xA1B2C3D4)
    lt = records[0][1] if records else 1
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, lt)]
    div = 1_000_000_000 if nano else 1_000_000
    for ts, _lt, frame in records:
        sec = int(ts)
        out.append(struct.pack(order + "IIII", sec, round((ts - sec) * div), len(frame),
                               len(frame)))
        if modified:
            out.append(struct.pack(order + "IHBB", 1, 2, 0, 0))
        out.append(frame)
    return b"".join(out)


def query(tid: int, name: str = "www.example.test", qtype: int = 1) -> bytes:
    q = dpkt.dns.DNS(id=tid, op=0x0100, qd=[dpkt.dns.DNS.Q(name=name, type=qtype)])
    return bytes(q)


def answer(tid: int, name: str = "www.example.test", rcode: int = 0) -> bytes:
    rr = dpkt.dns.DNS.RR(name=name, type=1, cls=1, ttl=60, rdata=b"\xc0\x00\x02\x07")
    r = dpkt.dns.DNS(id=tid, op=0x8180 | rcode, qd=[dpkt.dns.DNS.Q(name=name)], an=[rr])
    return bytes(r)


def eth(ip: bytes) -> bytes:
    return link_frame("ethernet", ip)[1]


#: scan_pcap_threads as run() drives it: (threads, least bytes a range holds, bytes
#: read at a time); small ranges and reads put range and read boundaries between
#: queries and their responses.
THREADED = [(2, 1, 1 << 20), (16, 1, 1 << 20), (3, 64, 1000), (2, 1 << 18, 8 << 20)]


def run(data: bytes | io.RawIOBase, want: frozenset[str] | None, compiled: bool,
        ports: tuple[int, ...] = (53,), threads: tuple[int, int, int] | None = None
        ) -> tuple[Any, ...]:
    """Everything a scan leaves behind, or the error it raised. ``threads``: scan with
    step_threads (see THREADED) instead of step."""
    scan = Scan(ports, want, threads[0] if threads else 1)
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    error = None
    reader = None
    try:
        with CaptureReader(src) as reader:
            if compiled and threads:
                scan.min_range = threads[1]
                reader.feed_pcap(scan.step_threads, threads[2])
            elif compiled:
                reader.feed_pcap(scan.step)
            else:
                scan.feed(reader)
    except CaptureFileError as exc:
        error = str(exc)
    cols = scan.columns(None)
    return (error, cols, scan.messages, scan.queries, scan.responses, scan.malformed,
            scan.first_ts, len(scan), dict(scan.names), reader and reader.records,
            reader and reader.truncated)


def same(data: bytes, ports: tuple[int, ...] = (53,)) -> tuple[Any, ...]:
    need(fastscan.COMPILED, "the compiled scanner (_cscan) was not built: needs a C "
         "compiler and Python headers at install time")
    for want in WANTS:
        py, c = run(data, want, False, ports), run(data, want, True, ports)
        assert c == py, want
        for threads in THREADED:
            assert run(data, want, True, ports, threads) == py, (want, threads)
    return run(data, None, True, ports)


def test_every_link_type_and_the_general_decoder() -> None:
    pkts, _ = scenario()
    for link in LINK_TYPES:
        recs = []
        for i, p in enumerate(pkts):
            lt, frame = link_frame(link, p)
            recs.append((BASE_TS + i * 0.01, lt, frame))
        out = same(pcap(recs))
        assert out[0] is None and out[2] >= 8, link  # UDP and TCP messages, both families


def test_pairing_duplicates_and_strays() -> None:
    """The pairing rule (netsql/capture/pairing.py) with the strays around it; the
    three DNS paths against each other are in test_dns_policy.py."""
    t = BASE_TS
    recs = [
        (t, eth(udp_ip(C, S, 40000, 53, query(1)))),
        (t + 0.5, eth(udp_ip(C, S, 40000, 53, query(1)))),  # captured twice: dropped
        (t + 1.6, eth(udp_ip(C, S, 40000, 53, query(1)))),  # retransmitted: the same row
        (t + 1.7, eth(udp_ip(S, C, 53, 40000, answer(1)))),  # rtt from the first copy
        (t + 2.0, eth(udp_ip(S, C, 53, 40000, answer(1)))),  # duplicate answer: dropped
        (t + 8.0, eth(udp_ip(S, C, 53, 40000, answer(1)))),  # within the window: dropped
        (t + 8.1, eth(udp_ip(S, C, 53, 40001, answer(9, rcode=3)))),  # never asked
        (t + 8.2, eth(udp_ip(C, S, 40002, 53, query(2, "gone.example.test")))),
        (t + 8.3, eth(udp_ip(C6, S6, 40003, 53, query(3, qtype=28)))),
        (t + 8.4, eth(udp_ip(S6, C6, 53, 40003, answer(3)))),
        (t + 8.5, eth(udp_ip(C, S, 40004, 5353, query(4)))),  # not a DNS port here
        (t + 8.6, eth(udp_ip(C, S, 40005, 53, b"\x00\x07short"))),  # < 12 bytes
        (t + 8.7, eth(udp_ip(S, C, 53, 40000, answer(1)))[:-3]),  # cut short, and a dup
        # questions the compiled scanner leaves to Python: escapes, root, no question,
        # a pointer into the header; and one in capitals it reads itself
        (t + 9.0, eth(udp_ip(C, S, 40010, 53, query(20, "sp ace.a;b.example.test")))),
        (t + 9.1, eth(udp_ip(C, S, 40011, 53, query(21, "")))),
        (t + 9.2, eth(udp_ip(C, S, 40012, 53, query(22)[:4] + b"\0\0" + query(22)[6:]))),
        (t + 9.3, eth(udp_ip(C, S, 40013, 53, query(23)[:12] + b"\xc0\x02\0\1\0\1"))),
        (t + 9.4, eth(udp_ip(C, S, 40014, 53, query(24, "WWW.Example.TEST")))),
        (t + 9.5, eth(udp_ip(S, C, 53, 40014, answer(24, "WWW.Example.TEST", rcode=2)))),
        (t + 11.8, eth(udp_ip(S, C, 53, 40000, answer(1)))),  # past the window: a row
    ]
    out = same(pcap([(ts, 1, f) for ts, f in recs]))
    cols = out[1]
    assert cols["status"][:4] == ["answered", "response_only", "unanswered", "answered"]
    assert cols["status"][-1] == "response_only" and cols["trans_id"][-1] == 1
    q = cols["query"]
    assert q[4:7] == ["sp\\032ace.a\\;b.example.test", ".", ""]
    assert q[-2] == "www.example.test"
    assert cols["rcode"][-2] == "SERVFAIL" and cols["qtype"][-2] == "A"
    assert cols["rtt"][0] is not None and abs(cols["rtt"][0] - 1.7) < 1e-6
    assert out[5] == 1  # the short message
    assert same(pcap([(ts, 1, f) for ts, f in recs]), ports=(53, 5353))[2] == out[2] + 1


def test_pairs_across_range_and_read_boundaries() -> None:
    """scan_pcap_threads parses ranges of a buffer on threads and pairs them after: a
    query in one range (or one read) answered in the next still pairs, as in one walk,
    wherever the file is split; so does a response captured before its query."""
    need(fastscan.COMPILED, "the compiled scanner (_cscan) was not built")
    t = BASE_TS
    recs = [(t + i * 0.01, eth(udp_ip(C, S, 40000 + i, 53, query(i)))) for i in range(40)]
    recs += [(t + 1 + i * 0.01, eth(udp_ip(S, C, 53, 40000 + i, answer(i))))
             for i in range(40)]  # every answer after every query
    recs += [(t + 2, eth(udp_ip(S, C, 53, 41000, answer(99)))),  # its query comes next
             (t + 2.001, eth(udp_ip(C, S, 41000, 53, query(99)))),
             (t + 2.5, eth(udp_ip(C, S, 41001, 53, query(98))))]  # never answered
    data = pcap([(ts, 1, f) for ts, f in recs])
    py = run(data, None, False)
    assert py[1]["status"] == ["answered"] * 41 + ["unanswered"] and py[7] == 42
    assert py[1]["rtt"][-2] == 0.0
    size = len(data) - 24
    for parts in (2, 3, 5, 16):
        for min_range in (1, size // parts):
            scan = Scan((53,), None, parts)
            scan.min_range = min_range
            with CaptureReader(io.BytesIO(data)) as reader:
                reader.feed_pcap(scan.step_threads)
            assert scan.ranges == parts  # the buffer was split as asked
            assert run(data, None, True, threads=(parts, min_range, 1 << 20)) == py
    for chunk in range(1, 400, 13):  # reads ending anywhere in the records
        for want in WANTS:
            assert run(data, want, True, threads=(2, 1, chunk)) == run(data, want, False)
    one = Scan((53,), None, 4)  # ranges below min_range: one thread parses the buffer
    with CaptureReader(io.BytesIO(data)) as reader:
        reader.feed_pcap(one.step_threads)
    assert one.ranges == 1 and one.columns(None) == py[1]


def test_damaged_frames_at_every_length() -> None:
    """Every prefix of an Ethernet (VLAN, SLL, SLL2, raw) frame carrying DNS, and IP
    headers that lie: malformed counts and rows must agree."""
    recs = []
    ts = BASE_TS
    for link in ("ethernet", "vlan", "sll", "sll2", "raw"):
        for ip in (udp_ip(C, S, 40000, 53, query(7)), udp_ip(C6, S6, 40000, 53, query(8))):
            lt, frame = link_frame(link, ip)
            for cut in range(len(frame) + 1):
                recs.append((ts, lt, frame[:cut]))
                ts += 0.001
    bad_ihl = bytearray(udp_ip(C, S, 40000, 53, query(9)))
    bad_ihl[0] = 0x43
    frag = bytearray(udp_ip(C, S, 40000, 53, query(10)))
    frag[6] |= 0x20  # first fragment (more fragments): still read
    later = bytearray(udp_ip(C, S, 40000, 53, query(11)))
    later[7] = 0x10  # a later fragment: skipped
    long_len = bytearray(udp_ip(C, S, 40000, 53, query(12)))
    long_len[24:26] = b"\xff\xff"  # UDP length past the frame: clipped to it
    for ip in (bad_ihl, frag, later, long_len):
        recs.append((ts, 1, eth(bytes(ip))))
        ts += 0.001
    sll_out = bytearray(link_frame("sll", udp_ip(C, S, 40000, 53, query(13)))[1])
    sll_out[0:2] = b"\x00\x04"  # loopback's outgoing copy: skipped
    recs.append((ts, 113, bytes(sll_out)))
    for lt in sorted({r[1] for r in recs}):
        out = same(pcap([r for r in recs if r[1] == lt]))
        assert out[0] is None and out[5] > 0, lt


def test_byte_orders_nanoseconds_modified_and_chunks() -> None:
    """Big-endian, nanosecond and modified pcap; a file much larger than one read so
    records straddle buffer ends; the same through a pipe-like short-read stream."""
    recs = []
    for i in range(30_000):
        tid = i & 0xFFFF
        port = 1024 + i % 50_000
        recs.append((BASE_TS + i * 0.0001, 1, eth(udp_ip(C, S, port, 53, query(tid)))))
        if i % 7:
            recs.append((BASE_TS + i * 0.0001 + 0.00005, 1,
                         eth(udp_ip(S, C, 53, port, answer(tid)))))
    for kw in ({}, {"order": ">"}, {"nano": True}, {"modified": True}):
        data = pcap(recs, **kw)  # type: ignore[arg-type]
        assert len(data) > 3 << 20
        out = same(data)
        assert out[7] == 30_000 and out[1]["status"].count("answered") == 30_000 - 30_000 // 7 - 1
    data = pcap(recs[:3000])
    via_pipe = run(Trickle(data, 4093), None, True)  # type: ignore[arg-type]
    assert via_pipe == run(io.BytesIO(data), None, False)


def test_corrupt_files_fail_alike() -> None:
    good = pcap([(BASE_TS, 1, eth(udp_ip(C, S, 40000, 53, query(1))))] * 3)
    huge = bytearray(good)
    struct.pack_into("<I", huge, 24 + (len(good) - 24) // 3 + 8, 1 << 25)
    cases = [(good[:20], "truncated file header", 0), (good[:-5], None, 1),
             (good[:24 + 10], None, 1), (bytes(huge), "claims 33554432 bytes", 0)]
    for data, error, truncated in cases:
        out = same(data)
        assert (out[0] is None) == (error is None) and (error or "") in (out[0] or "")
        assert out[10] == truncated


def _seed() -> bytes:
    pkts, _ = scenario()
    recs = [(BASE_TS + i, 1, link_frame("vlan", p)[1]) for i, p in enumerate(pkts)]
    recs += [(BASE_TS + 50, 1, eth(udp_ip(S, C, 53, 40000, answer(1))))]
    return pcap(recs)


SEED = _seed()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits(5), st.integers(0, 10**6))
def test_mutated_files_scan_alike(changes: list[Edit], cut: int) -> None:
    buf = apply_edits(SEED, changes)
    del buf[len(buf) - cut % 64 if cut % 3 == 0 else len(buf):]
    if bytes(buf[:4]) in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4"):
        same(bytes(buf))


def pointer_answer(tid: int, name: str, addrs: list[bytes]) -> bytes:
    """A response as resolvers write it: each answer owned by a pointer to the question."""
    q = query(tid, name)
    head = struct.pack(">HHHHHH", tid, 0x8180, 1, len(addrs), 0, 0)
    return head + q[12:] + b"".join(
        struct.pack(">HHHIH", 0xC00C, 1 if len(a) == 4 else 28, 1, 300 + i, len(a)) + a
        for i, a in enumerate(addrs))


class Counting(Scan):
    """Counts the messages handed back to Python."""

    handed = 0

    def _message(self, *args: Any) -> None:
        Counting.handed += 1
        super()._message(*args)


def test_usual_responses_decode_in_c() -> None:
    """Plain questions and A/AAAA answers owned by a pointer to the question are decoded
    by the compiled scanner itself (nothing handed to Python), with the same rows and
    the same address -> name map (sockets.remote_host) as the Python scan."""
    need(fastscan.COMPILED, "the compiled scanner (_cscan) was not built")
    recs = []
    v6 = bytes.fromhex("20010db8000000000000000000000007")
    for i in range(50):
        name = f"Host{i}.Example.TEST"
        addrs = [bytes([192, 0, 2, i]), v6][: 1 + i % 2] if i % 5 else []
        recs.append((BASE_TS + i, 1, eth(udp_ip(C, S, 40000 + i, 53, query(i, name)))))
        recs.append((BASE_TS + i + 0.01, 1,
                     eth(udp_ip(S, C, 53, 40000 + i, pointer_answer(i, name, addrs)))))
    data = pcap(recs)
    for want in (frozenset({"answers"}), None):
        Counting.handed = 0
        scan = Counting((53,), want)
        with CaptureReader(io.BytesIO(data)) as reader:
            reader.feed_pcap(scan.step)
        assert Counting.handed == 0
        assert run(data, want, True) == run(data, want, False)
        if want is None:  # (names come with the question, which {"answers"} skips)
            assert scan.names["2001:db8::7"][0] == "host49.example.test"
        assert scan.columns(None)["answers"][:2] == [[], ["192.0.2.1", "2001:db8::7"]]
        assert scan.columns(None)["ttls"][1] == [300, 301]
