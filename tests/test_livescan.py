"""Live capture's two decoders (netsql/capture/livescan.py): the compiled one reading a
TPACKET_V3 ring (_cscan.ring_scan) and the pure-Python one fed packet by packet (used
without a compiler) must make the same rows, counters, names and attribution calls.

The ring tests lay packets out in memory exactly as the kernel does in a ring (block
descriptors, tpacket3 headers, sockaddr_ll) so that every case, damaged ones included,
can be built; test_live_ring_and_packets_on_real_traffic runs both on a real socket."""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings

from netsql.capture import livescan
from netsql.capture.fastscan import COLUMNS
from netsql.capture.livescan import LiveDecoder
from netsql.capture.tracker import DnsTracker
from tests.conftest import need
from tests.dnsutil import tcp_ip, udp_ip
from tests.mutate import Edit, apply_edits, edits
from tests.netlab import CLIENT_V4, SERVER_V4, Lab, lab
from tests.test_fastscan import answer, query
from tests.test_pcapfile import BASE_TS

__all__ = ["lab"]  # the fixture

C, S = "192.0.2.1", "198.51.100.53"
C6, S6 = "2001:db8::1", "2001:db8::53"
HOST, OUTGOING = 0, 4  # sll_pkttype
ETHER, LOOPBACK = 1, 772  # sll_hatype
BLOCK_DESC, HDR, SLL = 48, 48, 20  # sizeof tpacket_block_desc, tpacket3_hdr, sockaddr_ll
TP_STATUS_USER = 1

# (seconds after BASE_TS, IP packet, sll_pkttype, sll_hatype, interface index)
Packet = tuple[float, bytes, int, int, int]
IFNAMES = {2: "eth0", 3: "br0", 1: "lo"}


def _align(n: int) -> int:
    return (n + 15) & ~15


def ring_image(packets: list[Packet], block_size: int = 4096,
               nblocks: int | None = None) -> tuple[bytearray, int]:
    """The ring as the kernel hands it over: every block full of ``packets`` marked
    TP_STATUS_USER, any further ones (up to ``nblocks``) still the kernel's."""
    blocks: list[list[Packet]] = [[]]
    used = BLOCK_DESC
    for p in packets:
        size = _align(_align(HDR + SLL) + len(p[1]))
        if used + size > block_size and blocks[-1]:
            blocks.append([])
            used = BLOCK_DESC
        blocks[-1].append(p)
        used += size
    n = nblocks or len(blocks)
    ring = bytearray(block_size * n)
    for b, members in enumerate(blocks):
        base = b * block_size
        struct.pack_into("=6I", ring, base, 3, 0, TP_STATUS_USER, len(members), BLOCK_DESC, 0)
        off = base + BLOCK_DESC
        for i, (t, ip, pkttype, hatype, index) in enumerate(members):
            net = _align(HDR + SLL)
            size = _align(net + len(ip))
            ts = BASE_TS + t
            sec = int(ts)
            struct.pack_into("=6IHH", ring, off, size if i + 1 < len(members) else 0, sec,
                             round((ts - sec) * 1e6) * 1000, len(ip), len(ip), 0, net, net)
            struct.pack_into("=HHiHBB", ring, off + HDR, 17, 0x0300, index, hatype, pkttype, 0)
            ring[off + net:off + net + len(ip)] = ip
            off += size
    return ring, n


class FakeRing:
    """What LiveDecoder.ring reads of a live.Ring, over a ring image."""

    def __init__(self, image: bytearray, nblocks: int, block_size: int = 4096) -> None:
        self.map, self.nblocks, self.block_size = image, nblocks, block_size
        self.block = 0
        self.ifnames: dict[int, str] = {}

    @staticmethod
    def ifname(index: int) -> str:
        return IFNAMES.get(index, f"if{index}")


class Seen:
    """A decoder and what it handed to attribution."""

    def __init__(self, compiled: bool = True, capacity: int = 100_000,
                 max_pending: int = 65_536) -> None:
        self.tracker = DnsTracker(capacity, max_pending, ports=(53,),
                                  compiled=compiled and livescan.COMPILED)
        self.decoder = LiveDecoder(self.tracker)
        self.early: list[tuple[Any, ...]] = []
        self.submitted: list[tuple[Any, ...]] = []
        self.decoder.early = lambda *a: self.early.append(a)
        self.decoder.submit = lambda rec: self.submitted.append(
            (rec.client_address, rec.client_port, rec.trans_id, rec.query))

    def result(self) -> dict[str, Any]:
        t = self.tracker
        cols, _ = t.columns(None)
        return {"rows": list(zip(*(cols[c] for c in COLUMNS), strict=True)),
                "counts": (t.messages, t.queries, t.responses, t.duplicates, t.malformed,
                           t.counts(None)["evicted"], sorted(t.buffered_by_netns().items())),
                "names": dict(t.names), "early": self.early, "submitted": self.submitted,
                "forgotten": t.pairing.forgotten}


def by_packet(packets: list[Packet], capacity: int = 100_000, max_pending: int = 65_536,
              compiled: bool = False) -> dict[str, Any]:
    """The pure-Python path (or, ``compiled``, the compiled store fed the same way), fed
    as LiveCapture's packet loop feeds it (loopback's outgoing copy skipped there)."""
    seen = Seen(compiled=compiled, capacity=capacity, max_pending=max_pending)
    for t, ip, pkttype, hatype, index in packets:
        if pkttype == OUTGOING and hatype == LOOPBACK:
            continue
        seen.decoder.packet(BASE_TS + t, ip, IFNAMES.get(index, f"if{index}"),
                            pkttype == OUTGOING or hatype == LOOPBACK)
    return seen.result()


def by_ring(packets: list[Packet], block_size: int = 4096, capacity: int = 100_000,
            max_pending: int = 65_536) -> dict[str, Any]:
    need(livescan.COMPILED, "the compiled scanner (_cscan) was not built: needs a C compiler")
    image, n = ring_image(packets, block_size)
    seen = Seen(capacity=capacity, max_pending=max_pending)
    ring = FakeRing(image, n, block_size)
    while True:
        taken = seen.decoder.ring(ring)
        if not taken:
            break
    for b in range(n):  # every block given back to the kernel
        assert struct.unpack_from("=I", image, b * block_size + 8)[0] == 0
    return seen.result()


def cname_answer(tid: int, name: str) -> bytes:
    """A response the C fast path leaves to Python (a CNAME before the address)."""
    import dpkt

    rrs = [dpkt.dns.DNS.RR(name=name, type=5, cls=1, ttl=30, cname="real.example.test"),
           dpkt.dns.DNS.RR(name="real.example.test", type=1, cls=1, ttl=300,
                           rdata=b"\xc0\x00\x02\x09")]
    r = dpkt.dns.DNS(id=tid, op=0x8180, qd=[dpkt.dns.DNS.Q(name=name)], an=rrs)
    return bytes(r)


def tcp_query(tid: int, name: str, cport: int, t: float) -> list[Packet]:
    msg = query(tid, name)
    framed = struct.pack(">H", len(msg)) + msg
    return [(t, tcp_ip(C, S, cport, 53, framed, 1000), OUTGOING, ETHER, 2)]


SEQUENCE: list[Packet] = [
    # a local query, its copy on a bridge, its answer
    (0.0, udp_ip(C, S, 40000, 53, query(1, "www.Example.test")), OUTGOING, ETHER, 2),
    (0.00001, udp_ip(C, S, 40000, 53, query(1, "www.Example.test")), HOST, ETHER, 3),
    (0.002, udp_ip(S, C, 53, 40000, answer(1, "www.example.test")), HOST, ETHER, 2),
    # over loopback: the outgoing copy is skipped, the incoming one counts (local)
    (0.01, udp_ip("127.0.0.1", "127.0.0.53", 40001, 53, query(2, "lo.example.test")),
     OUTGOING, LOOPBACK, 1),
    (0.01, udp_ip("127.0.0.1", "127.0.0.53", 40001, 53, query(2, "lo.example.test")),
     HOST, LOOPBACK, 1),
    # from another host (nothing to attribute), answered through a CNAME
    (0.02, udp_ip("192.0.2.7", S, 40002, 53, query(3, "alias.example.test")), HOST, ETHER, 2),
    (0.03, udp_ip(S, "192.0.2.7", 53, 40002, cname_answer(3, "alias.example.test")),
     HOST, ETHER, 2),
    # IPv6, the response first
    (0.04, udp_ip(S6, C6, 53, 40003, answer(4, "six.example.test")), HOST, ETHER, 2),
    (0.04, udp_ip(C6, S6, 40003, 53, query(4, "six.example.test")), OUTGOING, ETHER, 2),
    # DNS over TCP, a stray response, a short (malformed) message, non-DNS traffic
    *tcp_query(5, "tcp.example.test", 40004, 0.05),
    (0.06, udp_ip(S, C, 53, 40005, answer(6, "stray.example.test")), HOST, ETHER, 2),
    (0.07, udp_ip(C, S, 40006, 53, b"\x00\x07\x01"), OUTGOING, ETHER, 2),
    (0.08, udp_ip(C, S, 40007, 9999, query(8)), OUTGOING, ETHER, 2),
    # an interface the ring has not named yet
    (0.09, udp_ip(C, S, 40008, 53, query(9, "new.example.test")), OUTGOING, ETHER, 9),
]


def test_ring_and_packet_paths_agree() -> None:
    ring, packet = by_ring(SEQUENCE), by_packet(SEQUENCE)
    assert ring == packet
    rows = {r[COLUMNS.index("query")]: r for r in ring["rows"]}
    status = {q: r[COLUMNS.index("status")] for q, r in rows.items()}
    assert status == {"www.example.test": "answered", "lo.example.test": "unanswered",
                      "alias.example.test": "answered", "six.example.test": "answered",
                      "tcp.example.test": "unanswered", "stray.example.test": "response_only",
                      "new.example.test": "unanswered"}
    iface = {q: r[COLUMNS.index("interface")] for q, r in rows.items()}
    assert iface["www.example.test"] == "eth0" and iface["lo.example.test"] == "lo"
    assert iface["new.example.test"] == "if9"
    assert ring["counts"][:5] == (11, 7, 4, 1, 1)  # messages, queries, responses, dup., malformed
    assert set(ring["names"]) == {(None, "192.0.2.7"), (None, "192.0.2.9")}
    assert ring["names"][(None, "192.0.2.9")][0] == "alias.example.test"
    # the host's own queries, each once: attribution's socket lookup and its record
    sent = [(None, "udp", C, 40000, S, 53), (None, "udp", "127.0.0.1", 40001, "127.0.0.53", 53),
            (None, "udp", C6, 40003, S6, 53), (None, "tcp", C, 40004, S, 53),
            (None, "udp", C, 40008, S, 53)]
    assert sorted(ring["early"]) == sorted(sent)
    assert sorted(s[:3] for s in ring["submitted"]) == sorted(
        [(C, 40000, 1), ("127.0.0.1", 40001, 2), (C6, 40003, 4), (C, 40004, 5),
         (C, 40008, 9)])


def test_many_blocks_and_a_flood_past_the_open_limit() -> None:
    """Thousands of packets across blocks, more open transactions than the tracker
    keeps: both paths forget the same ones and agree on every row."""
    packets: list[Packet] = []
    for i in range(3000):
        packets.append((i * 1e-4, udp_ip(C, S, 10000 + i % 64, 53, query(i >> 6 & 0xFFFF,
                        f"h{i % 50}.example.test")), HOST, ETHER, 2))
        if i % 3 == 0:
            packets.append((i * 1e-4 + 5e-5, udp_ip(S, C, 53, 10000 + i % 64, answer(
                i >> 6 & 0xFFFF, f"h{i % 50}.example.test")), HOST, ETHER, 2))
    ring, packet = by_ring(packets), by_packet(packets)  # 4 KiB blocks: many calls
    assert ring == packet and len(ring["rows"]) == 3000


def test_a_small_buffer_evicts_alike() -> None:
    """More transactions than the buffer holds, with long names (the compiled store
    keeps names in a ring of bytes that grows and wraps round): both paths keep the
    same newest rows, count the same evictions, and answer the ones still open."""
    packets: list[Packet] = []
    for i in range(4000):
        name = f"{'x' * (i % 40)}{i}.a-rather-long-label.example.test"
        packets.append((i * 1e-4, udp_ip(C, S, 10000 + i % 64, 53, query(i >> 6 & 0xFFFF,
                        name)), HOST, ETHER, 2))
        if i % 5 == 0 and i > 3:
            j = i - 3  # the answer to a query whose row may already be evicted
            packets.append((i * 1e-4 + 5e-5, udp_ip(S, C, 53, 10000 + j % 64, answer(
                j >> 6 & 0xFFFF, f"{'x' * (j % 40)}{j}.a-rather-long-label.example.test")),
                HOST, ETHER, 2))
    ring, packet = by_ring(packets, capacity=1500), by_packet(packets, capacity=1500)
    assert ring == packet and len(ring["rows"]) == 1500
    assert ring["counts"][5:] == (4000 - 1500, [(None, 1500)])  # evicted, buffered
    assert "answered" in {r[COLUMNS.index("status")] for r in ring["rows"]}


def test_open_transactions_past_the_limit_are_forgotten_alike() -> None:
    """Few open transactions allowed, keys reused, answers late and early, seconds of
    capture time (the window expires some): both trackers, fed packet by packet, and
    the ring path, forget the same ones (each opening forgets the one 100 openings
    before it, if still its key's) and pair the rest alike."""
    need(livescan.COMPILED, "the compiled scanner (_cscan) was not built")
    packets: list[Packet] = []
    for i in range(6000):
        t = i * 2.5e-3  # 15 s: past the window
        tid, port = i % 700, 10000 + i % 7
        packets.append((t, udp_ip(C, S, port, 53, query(tid, f"h{i % 90}.example.test")),
                        HOST, ETHER, 2))
        if i % 4 == 1:  # the answer to a query 1 to 300 queries back
            j = max(i - 1 - (i * 7919) % 300, 0)
            packets.append((t + 1e-3, udp_ip(S, C, 53, 10000 + j % 7, answer(
                j % 700, f"h{j % 90}.example.test")), HOST, ETHER, 2))
    compiled = by_packet(packets, max_pending=100, compiled=True)
    assert compiled == by_packet(packets, max_pending=100)
    assert compiled == by_ring(packets, max_pending=100)
    assert compiled["forgotten"] > 1000
    assert {r[COLUMNS.index("status")] for r in compiled["rows"]} == {
        "answered", "unanswered", "response_only"}


def test_a_full_table_pairs_alike() -> None:
    """Thousands of open transactions on random keys, a limit of 4,096 (the compiled
    table's buckets then hold up to four keys on average: some fill and pass keys on
    to the next, whose lookups, forgetting and growth must find them), answers to
    queries up to 6,000 openings back (some already forgotten): the compiled store,
    by packet and by ring, and the pure-Python twin keep, forget and pair alike."""
    need(livescan.COMPILED, "the compiled scanner (_cscan) was not built")
    rng = random.Random(16)
    packets: list[Packet] = []
    keys: list[tuple[int, int]] = []
    for i in range(30_000):
        t = i * 2e-4
        key = (rng.randrange(1024, 65536), rng.randrange(65536))  # (client port, id)
        keys.append(key)
        packets.append((t, udp_ip(C, S, key[0], 53, query(key[1], f"n{i % 500}.test")),
                        HOST, ETHER, 2))
        if i % 3 == 0:
            port, tid = keys[max(i - rng.randrange(6000), 0)]
            packets.append((t + 1e-4, udp_ip(S, C, 53, port, answer(tid, "x.test")), HOST,
                            ETHER, 2))
    compiled = by_packet(packets, max_pending=4096, compiled=True)
    assert compiled == by_packet(packets, max_pending=4096)
    assert compiled == by_ring(packets, max_pending=4096)
    assert compiled["forgotten"] > 20_000
    statuses = Counter(r[COLUMNS.index("status")] for r in compiled["rows"])
    assert statuses["answered"] > 1000 and statuses["response_only"] > 1000


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits(6), edits(6))
def test_damaged_packets_decode_alike(first: list[Edit], second: list[Edit]) -> None:
    """(Damaged packets that have no copy: with a copy on another interface in the same
    batch, the ring may still attribute a query whose own copy was damaged, where the
    packet path, a batch of one, cannot; livescan.py says so.)"""
    packets = list(SEQUENCE)
    for k, changes in ((5, first), (6, second)):
        t, ip, pkttype, hatype, index = packets[k]
        packets[k] = (t, bytes(apply_edits(ip, changes)), pkttype, hatype, index)
    assert by_ring(packets) == by_packet(packets)


def test_a_damaged_block_is_skipped_not_read_past() -> None:
    """Offsets and counts that point outside the block: nothing read past it, the block
    handed back, the next one read."""
    need(livescan.COMPILED, "the compiled scanner (_cscan) was not built")
    good = [(0.0, udp_ip(C, S, 40000, 53, query(1, "ok.example.test")), HOST, ETHER, 2)]
    image, _ = ring_image(good * 2)
    blocks = [image[:4096], bytearray(image[:4096]), bytearray(image[:4096])]
    struct.pack_into("=I", blocks[0], 12, 1 << 30)  # num_pkts: far too many
    struct.pack_into("=I", blocks[1], 16, 4090)  # first packet past the end
    struct.pack_into("=H", blocks[2], BLOCK_DESC + 26, 4000)  # tp_net past the end
    ok, _ = ring_image([(0.5, udp_ip(C, S, 40001, 53, query(2, "next.example.test")),
                         HOST, ETHER, 2)])
    whole = bytearray(b"".join(blocks) + ok)
    seen = Seen()
    ring = FakeRing(whole, 4)
    assert seen.decoder.ring(ring) == 3 and ring.block == 0  # two in the first block
    assert [r[COLUMNS.index("query")] for r in seen.result()["rows"]] == [
        "ok.example.test", "next.example.test"]


# Captures twice at once in the lab's client namespace: through a ring (compiled) and
# packet by packet (pure Python); prints both row lists.
BOTH = """
import json, os, sys, time
from netsql.capture.fastscan import COLUMNS
from netsql.capture.manager import DnsCapture
from netsql.capture.tracker import DnsTracker
own = os.stat("/proc/self/ns/net").st_ino  # the lab's client namespace alone
caps = [DnsCapture(netns=[own]), DnsCapture(netns=[own])]
caps[1].use_ring = False  # and the pure-Python tracker:
caps[1].tracker = caps[1].decoder.tracker = DnsTracker(ports=caps[1].ports, compiled=False)
for c in caps:
    c.start()
rings = [[bool(p.live.rings) for p in c.nsset.parts.values()] == [True] for c in caps]
print("ready", flush=True)
sys.stdin.readline()
out = []
for c, ring in zip(caps, rings):
    deadline = time.monotonic() + 10
    while c.tracker.messages < int(sys.argv[1]) and time.monotonic() < deadline:
        time.sleep(0.05)
    c.stop()
    cols, _ = c.tracker.columns(None)
    out.append({"ring": ring,
                "rows": sorted(zip(*(cols[k] for k in COLUMNS if k not in ("ts", "rtt"))))})
print(json.dumps(out))
"""


def test_live_ring_and_packets_on_real_traffic(lab: Lab) -> None:
    need(livescan.COMPILED, "the compiled scanner (_cscan) was not built")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = lab.spawn(lab.client, sys.executable, "-c", BOTH, "8", stdin=subprocess.PIPE,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root)
    assert p.stdout is not None and p.stdin is not None
    assert p.stdout.readline().strip() == "ready"
    res = lab.resolve("www.example.test:A", "alias.example.test:A", "vmp.boldchat.com:AAAA")
    assert res.returncode == 0, res.stderr
    res = lab.resolve("--tcp", "api.example.test:A")
    assert res.returncode == 0, res.stderr
    out, err = p.communicate("go\n", timeout=60)
    assert p.returncode == 0, err
    ring, packet = json.loads(out)
    assert ring["ring"] is True and packet["ring"] is False
    assert ring["rows"] == packet["rows"]
    shown = [k for k in COLUMNS if k not in ("ts", "rtt")]
    queries = {(r[0], r[shown.index("query")], r[-1]) for r in ring["rows"]}
    assert queries == {(CLIENT_V4, n, "answered") for n in (
        "www.example.test", "alias.example.test", "vmp.boldchat.com", "api.example.test")}
    assert all(r[2] == SERVER_V4 for r in ring["rows"])
