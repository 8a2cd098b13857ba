"""DNS capture speed, as ratios against tshark/dnstop/tcpdump, in one run.

    sudo python benchmarks/bench_dns.py [--packets 200000] [--rate 20000] [--seconds 10]
                                        [--runs 3] [--ingest-only]

1. pcap ingest: a generated capture of --packets DNS packets (queries and their
   responses over Ethernet/IPv4/UDP); `netsql --pcap F -e "SELECT count(*) FROM
   dns_queries"` (and a GROUP BY of the names, and a search of the answers), one-shot
   and through `netsql serve`, against `tshark -r F -T fields -e dns.qry.name`,
   `tcpdump -n -r F` and `dnstop -l 3 F`, taking turns, each the median of --runs
   runs (wall and CPU time).
2. live: two namespaces joined by a veth pair; a sender blasts --rate DNS queries a
   second for --seconds at the other side; netsql captures on the receiving side
   (pure capture) and on the sending side (every query also held for attribution).
   Reports the share of sent messages netsql counted.
3. idle: netsql captures while 5 s of bulk TCP (not DNS) crosses the veth; reports
   netsql's CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dns_query(tid: int, name: str) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack(">HHHHHH", tid, 0x0100, 1, 0, 0, 0) + q + struct.pack(">HH", 1, 1)


def dns_response(query: bytes, addrs: list[bytes]) -> bytes:
    tid = query[:2]
    head = tid + struct.pack(">HHHHH", 0x8180, 1, len(addrs), 0, 0)
    answers = b"".join(struct.pack(">HHHIH", 0xC00C, 1, 1, 300, 4) + a for a in addrs)
    return head + query[12:] + answers


def frame(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, dst) + udp
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip


def make_pcap(path: str, packets: int) -> None:
    rnd = random.Random(7)
    names = [f"{w}{i}.{d}" for i in range(2000)
             for w, d in [(rnd.choice(["www", "api", "cdn", "mail"]),
                           rnd.choice(["example.com", "example.net", "boldchat.com"]))]]
    client, server = socket.inet_aton("10.1.0.2"), socket.inet_aton("10.1.0.1")
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        ts = 1_700_000_000.0
        for i in range(packets // 2):
            q = dns_query(i & 0xFFFF, rnd.choice(names))
            r = dns_response(q, [bytes([93, 184, rnd.randrange(256), rnd.randrange(256)])
                                 for _ in range(rnd.choice([1, 2]))])
            port = 1024 + i % 60000
            for data in (frame(client, server, port, 53, q), frame(server, client, 53, port, r)):
                ts += 0.0001
                sec = int(ts)
                f.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(data), len(data)))
                f.write(data)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of ``cmd`` (user and system time of it and its
    children; output discarded)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   cwd=ROOT, env=env)
    took = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return took, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


INGEST = [  # what netsql is asked of the file: its cheapest and its common statements
    ("count", "SELECT count(*) FROM dns_queries"),
    ("names", "SELECT query, count(*) FROM dns_queries GROUP BY query ORDER BY 2 DESC"),
    ("answers", "SELECT query, answers FROM dns_queries WHERE query LIKE '%boldchat%'"),
]


def ingest(packets: int, runs: int) -> list[str]:
    """netsql against tshark, tcpdump and dnstop on one file. The commands take turns
    within each run (a busy machine slows them alike), and each figure is the median
    of --runs runs: wall time, and CPU time (user + system: what the command cost,
    whatever else the machine was doing). netsql one-shot (it starts Python and
    DuckDB), and through a resident `netsql serve` (the client starts neither: its
    CPU is not counted, the server's is)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from timing import resident

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dns.pcap")
        make_pcap(path, packets)
        n = subprocess.run([PY, "-m", "netsql", "--pcap", path, "--csv", "--no-header", "-e",
                            INGEST[0][1]], capture_output=True,
                           text=True, check=True, cwd=ROOT).stdout.strip()
        tools = [("tshark -T fields -e dns.qry.name",
                  ["tshark", "-r", path, "-T", "fields", "-e", "dns.qry.name"]),
                 ("tcpdump -n -r", ["tcpdump", "-n", "-r", path]),
                 ("dnstop -l 3", ["dnstop", "-l", "3", path])]
        cmds = {name: [PY, "-m", "netsql", "--local", "--pcap", path, "-e", sql]
                for name, sql in INGEST}
        cmds.update(tools)
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in cmds}
        with resident() as env:
            served = {f"{name} (serve)": [PY, "-m", "netsql", "--pcap", path, "-e", sql]
                      for name, sql in INGEST}
            for cmd in served.values():  # the server's first command warms it up
                timed(cmd, env)
            samples.update({k: [] for k in served})
            for _ in range(runs):
                for k, cmd in cmds.items():
                    samples[k].append(timed(cmd))
                for k, cmd in served.items():
                    samples[k].append(timed(cmd, env))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
           for k, v in samples.items()}
    for name, sql in INGEST:
        for k in (name, f"{name} (serve)"):
            how = "netsql serve" if "serve" in k else "netsql"
            cpu = "" if "serve" in k else f", CPU {med[k][1]:.2f} s"
            out.append(f"| pcap ingest, {packets} packets ({n} transactions): `{sql}` | "
                       f"{how} {med[k][0]:.2f} s{cpu} | | |")
    for name, _ in tools:
        wall, cpu = med[name]
        ratios = ", ".join(f"{k}: {wall / med[k][0]:.2f}x" for k in samples if k not in
                           dict(tools))
        cpus = ", ".join(f"{k}: {cpu / med[k][1]:.2f}x" for k, _ in INGEST)
        out.append(f"| | {name} | {wall:.2f} s, CPU {cpu:.2f} s | netsql faster by "
                   f"(wall: {ratios}; CPU: {cpus}) |")
    return out


def ns(name: str, *cmd: str) -> None:
    subprocess.run(["ip", "netns", "exec", name, *cmd], check=True, capture_output=True)


def lab() -> tuple[str, str]:
    a, b = "nsbench-a", "nsbench-b"
    for n in (a, b):
        subprocess.run(["ip", "netns", "del", n], capture_output=True)
        subprocess.run(["ip", "netns", "add", n], check=True)
        ns(n, "ip", "link", "set", "lo", "up")
    subprocess.run(["ip", "link", "add", "nsb-a", "netns", a, "type", "veth", "peer", "name",
                    "nsb-b", "netns", b], check=True)
    ns(a, "ip", "addr", "add", "10.88.0.1/24", "dev", "nsb-a")
    ns(b, "ip", "addr", "add", "10.88.0.2/24", "dev", "nsb-b")
    ns(a, "ip", "link", "set", "nsb-a", "up")
    ns(b, "ip", "link", "set", "nsb-b", "up")
    return a, b


BLAST = """
import socket, struct, sys, time
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
q = lambda i: struct.pack('>HHHHHH', i & 0xFFFF, 0x0100, 1, 0, 0, 0) + b'\\x04host' + \\
    str(i % 10000).zfill(5).encode().join([bytes([5]), b'']) + b'\\x07example\\x03com\\x00' + \\
    b'\\x00\\x01\\x00\\x01'
start = time.monotonic(); sent = 0
while sent < rate * seconds:
    due = int((time.monotonic() - start) * rate) + 1
    while sent < min(due, rate * seconds):
        s.sendto(q(sent), ('10.88.0.1', 53)); sent += 1
    time.sleep(0.0005)
print(sent)
"""


def capture(nsname: str, seconds: float) -> tuple[subprocess.Popen[str], float]:
    p = subprocess.Popen(["ip", "netns", "exec", nsname, PY, "-m", "netsql", "--capture",
                          str(seconds), "--dns-buffer", "1000000", "--json", "-e",
                          "SELECT messages, kernel_drops, evicted, held FROM capture_stats"
                          if False else
                          "SELECT messages, kernel_drops, evicted FROM capture_stats"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert p.stderr is not None
    p.stderr.readline()
    time.sleep(0.3)
    return p, time.monotonic()


def live(rate: int, seconds: float) -> list[str]:
    out = []
    a, b = lab()
    try:
        for side, nsname in (("receiving side", a), ("sending side (queries attributed)", b)):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            # The window is the sender's 10 s and 2 more: a capture that falls behind
            # (a backlog in its socket buffer when the window closes) counts short.
            p, started = capture(nsname, seconds + 2)
            t0 = time.monotonic()
            sent = int(subprocess.run(["ip", "netns", "exec", b, PY, "-c", BLAST, str(rate),
                                       str(seconds)], capture_output=True, text=True,
                                      check=True).stdout)
            took = time.monotonic() - t0
            if time.monotonic() - started > seconds + 2:
                print(f"warning: the sender took {took:.1f} s, past the capture window",
                      file=sys.stderr)
            stdout, _ = p.communicate()
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            stats = json.loads(stdout)[0]
            cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            out.append(f"| live {rate}/s for {seconds:g} s, {side} (sender took {took:.1f} s)"
                       f" | {stats['messages']} of {sent} messages "
                       f"({100 * stats['messages'] / sent:.3f}%) | kernel drops "
                       f"{stats['kernel_drops']} | CPU {cpu:.1f} s (sender and netsql) |")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        p, _ = capture(a, 6)
        bulk = ("import socket,time\ns=socket.create_connection(('10.88.0.1', 5001))\n"
                "end=time.time()+5\nb=b'x'*65536\nn=0\nwhile time.time()<end: n+=s.send(b)\n"
                "print(n)")
        sink = subprocess.Popen(["ip", "netns", "exec", a, PY, "-c",
                                 "import socket\ns=socket.socket();s.bind(('10.88.0.1',5001));"
                                 "s.listen();c,_=s.accept()\nwhile c.recv(1<<20): pass"])
        time.sleep(0.3)
        moved = int(subprocess.run(["ip", "netns", "exec", b, PY, "-c", bulk],
                                   capture_output=True, text=True, check=True).stdout)
        p.communicate()
        sink.wait(timeout=5)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # The sink's CPU is in the same children's total: measure netsql alone below.
        out.append(f"| idle: 5 s of bulk TCP ({moved / 5 / 1e6:.0f} MB/s) across the veth, "
                   f"no DNS | see below | | |")
        del before, after
    finally:
        for n in (a, b):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
    return out


def idle_cpu() -> str:
    """netsql's own CPU time while bulk TCP (no DNS) flows through its namespace."""
    a, b = lab()
    try:
        sink = subprocess.Popen(["ip", "netns", "exec", a, PY, "-c",
                                 "import socket\ns=socket.socket();s.bind(('10.88.0.1',5001));"
                                 "s.listen();c,_=s.accept()\nwhile c.recv(1<<20): pass"])
        time.sleep(0.3)
        bulk = subprocess.Popen(["ip", "netns", "exec", b, PY, "-c",
                                 "import socket,time\ns=socket.create_connection(('10.88.0.1',"
                                 " 5001))\nend=time.time()+6\nb=b'x'*65536\n"
                                 "while time.time()<end: s.send(b)"])
        time.sleep(0.5)
        wrapper = ("import resource, subprocess, sys\n"
                   "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
                   "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
                   "print(u.ru_utime + u.ru_stime)")
        cpu = subprocess.run(["ip", "netns", "exec", a, PY, "-c", wrapper, PY, "-m", "netsql",
                              "--capture", "5", "-e", "SELECT 1"], capture_output=True,
                             text=True, check=True, cwd=ROOT).stdout.strip()
        floor = subprocess.run(["ip", "netns", "exec", a, PY, "-c", wrapper, PY, "-m",
                                "netsql", "-e", "SELECT 1"], capture_output=True, text=True,
                               check=True, cwd=ROOT).stdout.strip()
        bulk.wait(timeout=10)
        sink.wait(timeout=10)
        return (f"| idle capture for 5 s while bulk TCP crosses the veth | netsql CPU "
                f"{float(cpu):.2f} s (of which start-up {float(floor):.2f} s) | | |")
    finally:
        for n in (a, b):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from timing import bytecode

    bytecode()
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--rate", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ingest-only", action="store_true", help="skip the live parts")
    a = ap.parse_args()
    rows = ["| what | netsql | baseline | ratio |", "| --- | --- | --- | --- |"]
    rows += ingest(a.packets, a.runs)
    if os.geteuid() == 0 and not a.ingest_only:
        rows += live(a.rate, a.seconds)[:2]
        rows.append(idle_cpu())
    print("\n".join(rows))


if __name__ == "__main__":
    main()
