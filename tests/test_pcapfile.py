"""pcap/pcapng reading and frame decoding, end to end: capture files written by dpkt,
by a hand pcapng writer, and by tcpdump/tshark on a real dnsmasq in a namespace."""

from __future__ import annotations

import io
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netsql.capture.dnswire import decode_dns
from netsql.capture.packets import TcpDnsReassembler, decode_frame
from netsql.capture.pcapfile import CaptureFileError, CaptureReader, read_capture
from tests.conftest import need
from tests.dnsutil import (
    LINK_TYPES,
    link_frame,
    ours,
    png_epb,
    png_idb,
    png_shb,
    png_spb,
    png_unknown,
    pre,
    reference,
    tcp_ip,
    udp_ip,
)
from tests.mutate import Edit, apply_edits, edits
from tests.test_dnswire import CORPUS

S, A, P, F = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH, dpkt.tcp.TH_FIN
BASE_TS = 1_700_000_000.0


def conversation(client: str, server: str, cport: int, q: list[bytes], r: list[bytes],
                 ) -> tuple[list[bytes], list[bytes]]:
    """IP packets of DNS over UDP then over TCP (two queries in one segment, a response
    split over two segments with a retransmission between), and the messages a
    decoder should find, in order."""
    def opts(proto: int) -> dict[str, Any]:  # IPv4 options, or an IPv6 hop-by-hop header
        if ":" not in client:
            return {"v4_options": b"\x01\x01\x01\x00"}
        return {"v6_ext": bytes([proto, 0, 1, 4, 0, 0, 0, 0]), "v6_ext_type": 0}

    pkts = [udp_ip(client, server, cport, 53, q[0]), udp_ip(server, client, 53, cport, r[0]),
            udp_ip(client, server, cport + 1, 53, q[1], **opts(17))]
    expected = [q[0], r[0], q[1]]
    c, s = 1000, 5_000_000
    half = len(pre(r[1])) // 2
    resp = pre(r[1]) + pre(r[2])
    pkts += [
        tcp_ip(client, server, cport, 53, b"", c, S),
        tcp_ip(server, client, 53, cport, b"", s, S | A),
        tcp_ip(client, server, cport, 53, b"", c + 1, A),
        tcp_ip(client, server, cport, 53, pre(q[1]) + pre(q[2]), c + 1, P | A, **opts(6)),
        tcp_ip(server, client, 53, cport, resp[:half], s + 1),
        tcp_ip(server, client, 53, cport, resp[:half], s + 1),  # retransmission
        tcp_ip(server, client, 53, cport, resp[half:], s + 1 + half),
        tcp_ip(client, server, cport, 53, b"", c + 1 + len(pre(q[1]) + pre(q[2])), F | A),
    ]
    expected += [q[1], q[2], r[1], r[2]]
    return pkts, expected


def scenario() -> tuple[list[bytes], list[bytes]]:
    queries = [w for w in CORPUS if not decode_dns(w).is_response]  # type: ignore[union-attr]
    answers = [w for w in CORPUS if decode_dns(w).is_response]  # type: ignore[union-attr]
    p4, e4 = conversation("192.0.2.1", "198.51.100.53", 40000, queries[:3], answers[:3])
    p6, e6 = conversation("2001:db8::1", "2001:db8::53", 50000, queries[3:6], answers[3:6])
    noise = [
        bytes(dpkt.ip.IP(src=b"\x0a\0\0\1", dst=b"\x0a\0\0\2", p=1, data=b"\x08\0" + b"\0" * 6)),
        bytes(dpkt.ip.IP(src=b"\x0a\0\0\1", dst=b"\x0a\0\0\2", p=17, offset=1480,
                         data=b"\0" * 16)),  # a non-first fragment: ignored
    ]
    return p4 + noise + p6, e4 + e6


def decode_capture(source: str | Path | IO[bytes]) -> list[tuple[float, str | None, bytes]]:
    """The reader -> frame -> reassembly pipeline: (ts, interface, DNS message) tuples."""
    out = []
    tcp = TcpDnsReassembler()
    for ts, linktype, frame, ifname in read_capture(source):
        info = decode_frame(linktype, frame)
        if info is None:
            continue
        src, dst, sport, dport, transport, payload, flags, seq = info
        if transport == "udp":
            out.append((ts, ifname, payload))
        else:
            out += [(ts, ifname, m) for m in tcp.feed(src, dst, sport, dport, payload, flags,
                                                      seq)]
    return out


def check_messages(found: Iterable[bytes], expected: list[bytes]) -> None:
    found = list(found)
    assert found == expected
    for wire in found:
        msg = decode_dns(wire)
        assert msg is not None and ours(msg) == reference(wire)


@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("link", LINK_TYPES)
def test_dpkt_pcap_each_link_type(tmp_path: Path, link: str, nano: bool) -> None:
    pkts, expected = scenario()
    frames = [link_frame(link, p) for p in pkts]
    path = tmp_path / "dns.pcap"
    with path.open("wb") as f:
        w = dpkt.pcap.Writer(f, snaplen=65535, linktype=frames[0][0], nano=nano)
        for i, (_lt, frame) in enumerate(frames):
            w.writepkt(frame, ts=BASE_TS + i * 0.25)
    assert all(decode_frame(lt, fr) is not None for lt, fr in frames[:3])
    found = decode_capture(path)
    check_messages((m for _, _, m in found), expected)
    assert found[0][0] == pytest.approx(BASE_TS, abs=1e-6) and found[0][1] is None


def test_dpkt_pcapng_interfaces(tmp_path: Path) -> None:
    pkts, expected = scenario()
    idbs = [dpkt.pcapng.InterfaceDescriptionBlockLE(linktype=1, snaplen=65535),
            dpkt.pcapng.InterfaceDescriptionBlockLE(linktype=113, snaplen=65535)]
    path = tmp_path / "dns.pcapng"
    with path.open("wb") as f:
        w = dpkt.pcapng.Writer(f, idb=idbs)
        for i, p in enumerate(pkts):
            _lt, frame = link_frame("ethernet" if i % 2 == 0 else "sll", p)
            epb = dpkt.pcapng.EnhancedPacketBlockLE(iface_id=i % 2, pkt_data=frame,
                                                    caplen=len(frame), pkt_len=len(frame))
            w.writepkt(epb, ts=BASE_TS + i)
    reader = CaptureReader(path)
    assert reader.format == "pcapng"
    records = list(reader)
    assert [r[1] for r in records] == [1 if i % 2 == 0 else 113 for i in range(len(pkts))]
    assert records[3][0] == pytest.approx(BASE_TS + 3, abs=1e-6)
    check_messages((m for _, _, m in decode_capture(path)), expected)


def hand_pcapng(pkts: list[bytes]) -> bytes:
    """Two sections (little- then big-endian), interfaces with nanosecond, binary and
    default resolution, a timestamp offset, SPBs and unknown blocks."""
    half = len(pkts) // 2
    out = [png_shb("<"), png_idb("<", 1, "eth0", tsresol=9),
           png_idb("<", 276, "any", tsresol=0x80 | 20, tsoffset=100), png_unknown("<")]
    for i, p in enumerate(pkts[:half]):
        lt = i % 2
        frame = link_frame("ethernet" if lt == 0 else "sll2", p)[1]
        units = int((BASE_TS + i) * 1e9) if lt == 0 else int((BASE_TS - 100 + i) * 2**20)
        out.append(png_epb("<", lt, units, frame))
    out += [png_shb(">"), png_idb(">", 101, "raw0"), png_unknown(">")]
    for i, p in enumerate(pkts[half:], start=half):
        if i % 3:
            out.append(png_spb(">", p))
        else:
            out.append(png_epb(">", 0, int((BASE_TS + i) * 1e6), p))
    return b"".join(out)


def test_hand_pcapng_sections_resolutions_spb(tmp_path: Path) -> None:
    pkts, expected = scenario()
    path = tmp_path / "hand.pcapng"
    path.write_bytes(hand_pcapng(pkts))
    with CaptureReader(path) as reader:
        records = list(reader)
        assert reader.skipped_blocks == 2 and reader.truncated == 0
    assert len(records) == len(pkts)
    half = len(pkts) // 2
    for i, (ts, lt, _frame, ifname) in enumerate(records):
        if i < half:
            assert (lt, ifname) == ((1, "eth0") if i % 2 == 0 else (276, "any"))
            assert ts == pytest.approx(BASE_TS + i, abs=1e-5)
        else:
            assert (lt, ifname) == (101, "raw0")
            last_epb = i - i % 3
            assert ts == pytest.approx(BASE_TS + last_epb, abs=1e-5)
    check_messages((m for _, _, m in decode_capture(path)), expected)


class Trickle(io.RawIOBase):
    """A pipe-like source that returns at most ``step`` bytes per read."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        chunk = self.data[self.pos:self.pos + min(self.step, n if n >= 0 else self.step)]
        self.pos += len(chunk)
        return chunk


def test_short_reads_and_chunk_boundaries(tmp_path: Path) -> None:
    pkts, expected = scenario()
    data = hand_pcapng(pkts)
    via_pipe = decode_capture(Trickle(data, 7))  # type: ignore[arg-type]
    assert via_pipe == decode_capture(io.BytesIO(data))
    # Past the 1 MiB read size: the same messages many times over.
    path = tmp_path / "big.pcap"
    with path.open("wb") as f:
        w = dpkt.pcap.Writer(f, snaplen=65535, linktype=101)
        for i in range(500):
            for p in pkts:
                w.writepkt(p, ts=BASE_TS + i)
    assert path.stat().st_size > 1 << 20
    check_messages((m for _, _, m in decode_capture(path)), expected * 500)


def test_not_a_capture(tmp_path: Path) -> None:
    for content in (b"", b"abc", b"hello world, this is text\n", b"\x0a\x0d\x0d"):
        path = tmp_path / "x.txt"
        path.write_bytes(content)
        with pytest.raises(CaptureFileError, match="not a pcap or pcapng file"):
            CaptureReader(path)


def test_truncated_final_record_is_tolerated(tmp_path: Path) -> None:
    pkts, _ = scenario()
    buf = io.BytesIO()
    w = dpkt.pcap.Writer(buf, snaplen=65535, linktype=101)
    for p in pkts:
        w.writepkt(p, ts=BASE_TS)
    whole = buf.getvalue()
    for cut in (3, 10, len(pkts[-1]) + 10):
        reader = CaptureReader(io.BytesIO(whole[:-cut]))
        assert len(list(reader)) == len(pkts) - 1 and reader.truncated == 1
    png = hand_pcapng(pkts)
    reader = CaptureReader(io.BytesIO(png[:-5]))
    assert len(list(reader)) == len(pkts) - 1 and reader.truncated == 1
    with pytest.raises(CaptureFileError, match="truncated file header"):
        list(CaptureReader(io.BytesIO(whole[:20])))


def test_corrupt_lengths(tmp_path: Path) -> None:
    pkts, _ = scenario()
    png = bytearray(hand_pcapng(pkts))
    png[4:8] = struct.pack("<I", 13)  # SHB length not a multiple of 4
    with pytest.raises(CaptureFileError, match="corrupt pcapng file"):
        list(CaptureReader(io.BytesIO(bytes(png))))
    buf = io.BytesIO()
    dpkt.pcap.Writer(buf, linktype=1).writepkt(b"x" * 60, ts=BASE_TS)
    bad = bytearray(buf.getvalue())
    bad[32:36] = struct.pack("<I", 0x7FFFFFFF)  # incl_len
    with pytest.raises(CaptureFileError, match="claims"):
        list(CaptureReader(io.BytesIO(bytes(bad))))


def _files() -> list[bytes]:
    pkts, _ = scenario()
    buf = io.BytesIO()
    w = dpkt.pcap.Writer(buf, snaplen=65535, linktype=1, nano=True)
    for p in pkts[:6]:
        w.writepkt(link_frame("vlan", p)[1], ts=BASE_TS)
    return [buf.getvalue(), hand_pcapng(pkts[:8])]


FILES = _files()


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FILES), edits(4), st.integers(0, 10**6))
def test_mutated_files_raise_only_capture_errors(data: bytes, changes: list[Edit],
                                                 cut: int) -> None:
    buf = apply_edits(data, changes)
    del buf[len(buf) - cut % 64 if cut % 3 == 0 else len(buf):]
    try:
        for _ts, lt, frame, _ifname in CaptureReader(io.BytesIO(bytes(buf))):
            info = decode_frame(lt, frame)
            if info is not None:
                decode_dns(info[5])
    except CaptureFileError as e:
        assert str(e).splitlines()[0]


# ---- a real capture: dnsmasq in a namespace, tcpdump and tshark on its loopback ------

DNSMASQ_ARGS = [
    "--no-daemon", "--no-resolv", "--no-hosts", "--port=53", "--listen-address=127.0.0.1",
    "--bind-interfaces", "--user=root", "--address=/example.test/192.0.2.7",
    "--address=/example.test/2001:db8::7", "--host-record=host.example.test,192.0.2.8",
    "--cname=alias.example.test,host.example.test",
    "--txt-record=txt.example.test,hello world", "--mx-host=mx.example.test,mail.example.test,10",
]
QUERIES = [  # (name, type, +tcp?)
    ("www.example.test", "A", False), ("www.example.test", "AAAA", False),
    ("alias.example.test", "A", True), ("txt.example.test", "TXT", False),
    ("mx.example.test", "MX", True), ("nothere.invalid", "A", False),
    ("www.example.test", "A", True),
]


def _wait_for(proc: subprocess.Popen[bytes], path: Path, text: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        assert proc.poll() is None, path.read_text(errors="replace")
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.privileged
def test_real_capture_tcpdump_and_tshark(netns: str, tmp_path: Path) -> None:
    for tool in ("dnsmasq", "tcpdump", "tshark", "dig"):
        need(shutil.which(tool) is not None, f"needs {tool}")
    ns = ["ip", "netns", "exec", netns]
    pcap, pcapng = tmp_path / "lo.pcap", tmp_path / "lo.pcapng"
    logs = {name: tmp_path / f"{name}.log" for name in ("dnsmasq", "tcpdump", "tshark")}
    cmds = {
        "dnsmasq": ["dnsmasq", *DNSMASQ_ARGS, f"--pid-file={tmp_path / 'dnsmasq.pid'}"],
        "tcpdump": ["tcpdump", "-i", "lo", "-n", "-Z", "root", "-U", "--immediate-mode",
                    "-w", str(pcap), "--time-stamp-precision=nano", "port", "53"],
        "tshark": ["tshark", "-i", "lo", "-F", "pcapng", "-w", str(pcapng), "-f", "port 53"],
    }
    ready = {"dnsmasq": "started", "tcpdump": "listening on", "tshark": "Capture started"}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, cmd in cmds.items():
            procs[name] = subprocess.Popen([*ns, *cmd], stdout=subprocess.DEVNULL,
                                           stderr=logs[name].open("wb"))
            _wait_for(procs[name], logs[name], ready[name])
        for qname, qtype, tcp in QUERIES:
            subprocess.run([*ns, "dig", "@127.0.0.1", qname, qtype, "+tries=1", "+time=3",
                            "+tcp" if tcp else "+notcp"], check=True, capture_output=True)
        time.sleep(0.5)
    finally:
        for name in ("tcpdump", "tshark", "dnsmasq"):
            if name in procs:
                _stop(procs[name])
    for path, fmt in ((pcap, "pcap"), (pcapng, "pcapng")):
        assert CaptureReader(path).format == fmt
        wires = [m for _, _, m in decode_capture(path)]
        msgs = [decode_dns(w) for w in wires]
        for wire, msg in zip(wires, msgs, strict=True):
            assert msg is not None and not msg.malformed
            assert ours(msg) == reference(wire)
        seen = {(m.qname, m.qtype, m.is_response) for m in msgs if m is not None}
        for qname, qtype, _tcp in QUERIES:
            code = {"A": 1, "AAAA": 28, "TXT": 16, "MX": 15}[qtype]
            assert {(qname, code, False), (qname, code, True)} <= seen, (path, qname, qtype)
        answers = {(m.qname, m.qtype): m.answers for m in msgs if m and m.is_response}
        assert answers[("www.example.test", 1)] == [("www.example.test", 1, 0, "192.0.2.7")]
        assert answers[("www.example.test", 28)][0][3] == "2001:db8::7"
        assert ("alias.example.test", 5, 0, "host.example.test") in answers[
            ("alias.example.test", 1)]
        assert answers[("txt.example.test", 16)][0][3] == '"hello world"'
        assert answers[("mx.example.test", 15)][0][3] == "10 mail.example.test"
        assert len(msgs) == 2 * len(QUERIES)
        ifnames = {ifname for _, ifname, _ in decode_capture(path)}
        assert ifnames == ({None} if fmt == "pcap" else {"lo"})
