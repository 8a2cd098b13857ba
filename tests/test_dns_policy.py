"""One DNS matching policy (netsql/capture/pairing.py, docs/dns.md "Matching") on all
three paths that build dns_queries rows: the live tracker (frames handed over exactly as
LiveCapture hands them, DnsCapture.packet), the pure-Python pcap scan and the compiled
scanner (_cscan.c). Each sequence is written to a pcap file, read by both scans, fed to
the live path, and all three must give the same rows; each sequence also pins down what
those rows are."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netsql.capture import fastscan
from netsql.capture.fastscan import COLUMNS
from netsql.capture.manager import DnsCapture, PcapSource
from netsql.capture.packets import decode_frame
from netsql.capture.pairing import WINDOW
from netsql.capture.pcapfile import CaptureReader
from tests.conftest import need, run_netsql
from tests.dnsutil import pre, tcp_ip, udp_ip
from tests.netlab import CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6, Lab, lab, sh
from tests.test_fastscan import answer, eth, pcap, query, run, same
from tests.test_pcapfile import BASE_TS

__all__ = ["lab"]  # the fixture

C, S = "192.0.2.1", "198.51.100.53"
C6, S6 = "2001:db8::1", "2001:db8::53"
SYN, ACK, PSH = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH

# (seconds after BASE_TS, IP packet, interface it was seen on)
Step = tuple[float, bytes, str]
COMPARED = tuple(c for c in COLUMNS if c != "interface")  # a classic pcap has none


def q(tid: int, name: str = "www.example.test", cport: int = 40000, t: float = 0.0,
      iface: str = "veth0", client: str = C, server: str = S) -> Step:
    return t, udp_ip(client, server, cport, 53, query(tid, name)), iface


def r(tid: int, name: str = "www.example.test", cport: int = 40000, t: float = 0.0,
      iface: str = "veth0", rcode: int = 0, client: str = C, server: str = S) -> Step:
    return t, udp_ip(server, client, 53, cport, answer(tid, name, rcode)), iface


def quantized(t: float) -> float:
    """BASE_TS + t as a pcap file gives it back (microseconds), so every path sees the
    same timestamps."""
    ts = BASE_TS + t
    sec = int(ts)
    return sec + round((ts - sec) * 1_000_000) / 1_000_000


def live_rows(steps: list[Step]) -> list[tuple[Any, ...]]:
    """The rows the live capture makes of ``steps``: each packet goes to DnsCapture.packet,
    the callback LiveCapture calls for every packet its sockets read (an IP packet, from
    another host: nothing to attribute)."""
    cap = DnsCapture(ports=(53,))
    for t, ip, iface in steps:
        cap.packet(quantized(t), ip, iface, local=False)
    return [tuple(getattr(rec, c) for c in COMPARED) for rec in cap.tracker.snapshot()]


def table(cols: dict[str, list[Any]]) -> list[tuple[Any, ...]]:
    return list(zip(*(cols[c] for c in COMPARED), strict=True))


def file_rows(path: Path, compiled: bool) -> list[tuple[Any, ...]]:
    """The rows a scan of the pcap file gives (the Python scan or the compiled one)."""
    with open(path, "rb") as f:
        out = run(f, None, compiled)  # type: ignore[arg-type]
    assert out[0] is None, out[0]
    return table(out[1])


def conform(steps: list[Step], tmp_path: Path) -> list[dict[str, Any]]:
    """Rows of ``steps`` from all three paths, asserted identical; as dicts."""
    path = tmp_path / "steps.pcap"
    data = pcap([(quantized(t), 1, eth(ip)) for t, ip, _ in steps])
    path.write_bytes(data)
    live = live_rows(steps)
    python = file_rows(path, compiled=False)
    assert python == live
    engine = table(PcapSource([str(path)]).columns(None))  # what the engine reads
    assert engine == live
    need(fastscan.COMPILED, "the compiled scanner (_cscan) was not built: needs a C "
         "compiler and Python headers at install time")
    assert file_rows(path, compiled=True) == live
    same(data)  # and C == Python whichever columns a statement reads
    return [dict(zip(COMPARED, row, strict=True)) for row in live]


def statuses(rows: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    return [(row["query"], row["trans_id"], row["status"]) for row in rows]


def test_response_seen_twice_is_one_row(tmp_path: Path) -> None:
    """A query and its response each seen on a veth and on the bridge: one row."""
    rows = conform([q(1, t=0.0), q(1, t=0.00001, iface="br0"),
                    r(1, t=0.002, iface="br0"), r(1, t=0.00201)], tmp_path)
    assert statuses(rows) == [("www.example.test", 1, "answered")]
    assert rows[0]["rtt"] == pytest.approx(0.002, abs=1e-6) and rows[0]["answers"] == ["192.0.2.7"]


def test_retransmitted_query_is_one_transaction(tmp_path: Path) -> None:
    """The client asks again with the same id and port; the server answers both: one
    row, its rtt from the first query."""
    rows = conform([q(2, t=0.0), q(2, t=1.0), r(2, t=1.01), r(2, t=1.02)], tmp_path)
    assert statuses(rows) == [("www.example.test", 2, "answered")]
    assert rows[0]["rtt"] == pytest.approx(1.01, abs=1e-6) and rows[0]["ts"] == quantized(0.0)


def test_id_reuse_is_a_new_transaction(tmp_path: Path) -> None:
    """An id and port used again after the answer, or after the window with no answer,
    is a new transaction; a late copy of the first answer after the second query is
    still a duplicate of the first (it is within the window of the first answer)."""
    late = WINDOW + 1
    rows = conform([q(3, "a.example.test", t=0.0), r(3, "a.example.test", t=0.01),
                    q(3, "b.example.test", t=0.5), r(3, "b.example.test", t=0.51, rcode=3),
                    q(4, "c.example.test", cport=40001, t=1.0),
                    q(4, "d.example.test", cport=40001, t=1.0 + late),
                    r(4, "d.example.test", cport=40001, t=1.01 + late)], tmp_path)
    assert statuses(rows) == [("a.example.test", 3, "answered"),
                              ("b.example.test", 3, "answered"),
                              ("c.example.test", 4, "unanswered"),
                              ("d.example.test", 4, "answered")]
    assert [row["rcode"] for row in rows] == ["NOERROR", "NXDOMAIN", None, "NOERROR"]


def test_response_before_query(tmp_path: Path) -> None:
    """Captured out of order (the response first): one answered row, rtt 0; a further
    copy of the query joins it too. A response with no query at all stays alone."""
    rows = conform([r(5, t=0.0, iface="br0"), q(5, t=0.0001), q(5, t=0.0002, iface="br0"),
                    r(6, "stray.example.test", cport=40002, t=0.1)], tmp_path)
    assert statuses(rows) == [("www.example.test", 5, "answered"),
                              ("stray.example.test", 6, "response_only")]
    assert rows[0]["rtt"] == 0.0 and rows[0]["rcode"] == "NOERROR"
    assert rows[0]["ts"] == quantized(0.0) and rows[1]["rtt"] is None


def test_response_that_never_comes(tmp_path: Path) -> None:
    """A query left unanswered; its response arriving after the window is not paired
    with it (a response-only row); the same id and port once that response's window
    has passed open a new transaction."""
    late = WINDOW + 0.5
    rows = conform([q(7, t=0.0), q(8, cport=40003, t=1.0), r(7, t=late),
                    q(7, t=late + WINDOW + 0.1)], tmp_path)
    assert statuses(rows) == [("www.example.test", 7, "unanswered"),
                              ("www.example.test", 8, "unanswered"),
                              ("www.example.test", 7, "response_only"),
                              ("www.example.test", 7, "unanswered")]
    assert [row["rcode"] for row in rows] == [None, None, "NOERROR", None]


def _tcp_exchange(t: float, cport: int, tid: int, name: str, client: str, server: str,
                  iface: str) -> list[Step]:
    qw, rw = pre(query(tid, name)), pre(answer(tid, name))
    return [
        (t, tcp_ip(client, server, cport, 53, b"", 100, SYN), iface),
        (t + 0.001, tcp_ip(server, client, 53, cport, b"", 500, SYN | ACK), iface),
        (t + 0.002, tcp_ip(client, server, cport, 53, qw[:5], 101), iface),  # split
        (t + 0.003, tcp_ip(client, server, cport, 53, qw[5:], 106), iface),
        (t + 0.004, tcp_ip(server, client, 53, cport, rw, 501, ACK | PSH), iface),
    ]


def test_tcp_and_udp(tmp_path: Path) -> None:
    """The transport is part of the key: the same id and ports over UDP and TCP are two
    transactions. TCP segments seen on two interfaces (and a TCP retransmission) give
    each message once; IPv6 like IPv4."""
    tcp = _tcp_exchange(0.1, 40010, 9, "t.example.test", C, S, "veth0")
    tcp_br = [(t + 0.00001, ip, "br0") for t, ip, _ in tcp]  # the bridge's copies
    steps = sorted([*tcp, *tcp_br], key=lambda s: s[0])
    steps.append((0.1035, tcp[3][1], "veth0"))  # a TCP retransmission of a segment
    udp = [q(9, "t.example.test", cport=40010, t=0.0), r(9, "t.example.test", cport=40010,
                                                         t=0.2)]
    six = _tcp_exchange(0.3, 40011, 10, "six.example.test", C6, S6, "veth0")
    six += [q(10, "six.example.test", cport=40011, t=0.31, client=C6, server=S6),
            r(10, "six.example.test", cport=40011, t=0.32, client=C6, server=S6)]
    rows = conform(sorted([*udp, *steps, *six], key=lambda s: s[0]), tmp_path)
    assert [(row["query"], row["transport"], row["client_address"], row["status"])
            for row in rows] == [
        ("t.example.test", "udp", C, "answered"),
        ("t.example.test", "tcp", C, "answered"),
        ("six.example.test", "tcp", C6, "answered"),
        ("six.example.test", "udp", C6, "answered")]
    assert rows[1]["rtt"] == pytest.approx(0.001, abs=1e-6)  # from the segment completing the query


def test_counters_agree(tmp_path: Path) -> None:
    """Duplicates are counted alike by the live tracker and both scans."""
    steps = [q(1, t=0.0), q(1, t=0.00001, iface="br0"), r(1, t=0.002, iface="br0"),
             r(1, t=0.00201), q(2, cport=40001, t=0.1), q(2, cport=40001, t=1.1)]
    cap = DnsCapture(ports=(53,))
    for t, ip, iface in steps:
        cap.packet(quantized(t), ip, iface, local=False)
    data = pcap([(quantized(t), 1, eth(ip)) for t, ip, _ in steps])
    counts = []
    for compiled in (False, True) if fastscan.COMPILED else (False,):
        scan = fastscan.Scan((53,), None)
        with CaptureReader(io.BytesIO(data)) as reader:
            if compiled:
                reader.feed_pcap(scan.step)
            else:
                scan.feed(reader)
        counts.append((scan.messages, scan.queries, scan.responses, scan.pairing.duplicates))
    t = cap.tracker
    assert set(counts) == {(t.messages, t.queries, t.responses, t.duplicates)} == {(6, 4, 2, 3)}


def test_live_forgets_the_oldest_past_its_limit() -> None:
    """Live capture keeps at most max_pending open transactions: past that, the oldest
    is forgotten (counted), and its late response stands alone."""
    cap = DnsCapture(ports=(53,))
    cap.tracker = tracker = type(cap.tracker)(max_pending=2)
    cap.decoder.tracker = tracker
    for t, ip, iface in [q(1, t=0.0), q(2, cport=40001, t=0.1), q(3, cport=40002, t=0.2),
                         r(1, t=0.3), r(3, cport=40002, t=0.4)]:
        cap.packet(quantized(t), ip, iface, local=False)
    assert [(rec.trans_id, rec.status) for rec in tracker.snapshot()] == [
        (1, "unanswered"), (2, "unanswered"), (3, "answered"), (1, "response_only")]
    assert tracker.pairing.forgotten == 2 and len(tracker.pairing.table) == 2
    assert tracker.counts(None)["forgotten"] == 2  # capture_stats.forgotten


# Random sequences: a few keys, so that copies, retransmissions, reuse and strays mix;
# times on a coarse grid around the window, so that its edges are hit exactly.
_EVENT = st.tuples(st.booleans(), st.integers(0, 2), st.integers(0, 1), st.integers(0, 1),
                   st.sampled_from([0.0, 0.001, 0.5, 2.5, WINDOW / 2, WINDOW - 0.001, WINDOW,
                                    WINDOW + 0.001]))


@settings(max_examples=300, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(_EVENT, max_size=14))
def test_random_sequences_agree(tmp_path: Path,
                                events: list[tuple[bool, int, int, int, float]]) -> None:
    """Any mix of queries and responses over a few keys: the same rows on every path."""
    steps: list[Step] = []
    t = 0.0
    for is_query, tid, port, name, gap in events:
        t += gap
        make = q if is_query else r
        steps.append(make(tid, f"n{name}.example.test", cport=40000 + port, t=t,
                          iface=("veth0", "br0")[port]))
    conform(steps, tmp_path)


def _bridge_the_client(lab: Lab) -> None:
    """Put the client's veth into a bridge that holds its addresses: every DNS packet
    is then seen twice in the client namespace, on the bridge and on the veth."""
    veth = lab.run(lab.client, "ip", "-o", "link", "show", "type", "veth").stdout
    dev = veth.split(":")[1].strip().split("@")[0]
    br = "br" + dev[2:]
    ns = ["ip", "-n", lab.client]
    sh(*ns, "link", "add", br, "type", "bridge", "forward_delay", "0", "stp_state", "0")
    sh(*ns, "addr", "flush", "dev", dev)
    sh(*ns, "link", "set", dev, "master", br)
    sh(*ns, "addr", "add", f"{CLIENT_V4}/24", "dev", br)
    sh(*ns, "addr", "add", f"{CLIENT_V6}/64", "dev", br, "nodad")
    sh(*ns, "link", "set", br, "up")
    deadline = time.monotonic() + 10
    while lab.run(lab.client, "ping", "-c", "1", "-W", "1", SERVER_V4).returncode:
        assert time.monotonic() < deadline, "the bridge does not forward"


ROW = "query, qtype, rcode, answers, transport, client_address, client_port, trans_id, status"


def _packets(path: str) -> str:
    """The DNS packets of a capture file, one a line (to see why a test failed)."""
    lines = []
    with CaptureReader(path) as reader:
        for ts, lt, frame, _ in reader:
            info = decode_frame(lt, frame)
            if info is not None:
                src, dst, sport, dport, transport, payload, flags, seq = info
                lines.append(f"{ts:.6f} {transport} {src}.{sport} > {dst}.{dport} "
                             f"len {len(payload)} flags {flags} seq {seq} {payload[:4].hex()}")
    return "\n".join(lines)


def test_real_bridge_live_and_file_agree(lab: Lab) -> None:
    """Real traffic through a bridge: live capture and tcpdump's file of the same packets
    (each query and response seen on the bridge and on the veth) give one answered row
    per lookup, the same rows."""
    need(shutil.which("tcpdump") is not None, "needs tcpdump")
    _bridge_the_client(lab)
    path = os.path.join(lab.tmp, "bridge.pcap")
    dump = lab.spawn(lab.client, "tcpdump", "-i", "any", "-U", "--immediate-mode", "-Z", "root",
                     "-w", path, "port", "53", stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not (os.path.exists(path) and os.path.getsize(path) >= 24):  # header: capturing
        assert dump.poll() is None and time.monotonic() < deadline, "tcpdump did not start"
        time.sleep(0.02)
    p = lab.netsql_capture(4, "--json", "-e", f"SELECT {ROW} FROM dns_queries ORDER BY ts; "
                           "SELECT messages, duplicates FROM capture_stats")
    udp = lab.resolve("www.example.test:A", "alias.example.test:AAAA", "gone.example.test:A")
    tcp = lab.resolve("--tcp", "--server", SERVER_V6, "vmp.boldchat.com:AAAA")
    assert udp.returncode == 0 and tcp.returncode == 0, udp.stderr + tcp.stderr
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    live, stats = json.loads(out)  # two statements: one array of their arrays
    assert stats == [{"messages": 14, "duplicates": 6}]
    dump.send_signal(signal.SIGINT)
    dump.wait(timeout=10)
    from_file = run_netsql("--pcap", path, "--json", "-e",
                           f"SELECT {ROW} FROM dns_queries ORDER BY ts")
    assert from_file.returncode == 0, from_file.stderr
    assert [(r["query"], r["transport"], r["status"]) for r in live] == [
        ("www.example.test", "udp", "answered"), ("alias.example.test", "udp", "answered"),
        ("gone.example.test", "udp", "answered"), ("vmp.boldchat.com", "tcp", "answered")]
    assert json.loads(from_file.stdout) == live, _packets(path)
    copies = run_netsql("--pcap", path, "--csv", "--no-header", "-e",
                        "SELECT messages, duplicates FROM capture_stats "
                        "WHERE source = 'bridge.pcap'")
    # every UDP message twice (12, 6 of them copies); TCP's copies are dropped by its
    # reassembly (2)
    assert copies.stdout.split() == ["14,6"]
