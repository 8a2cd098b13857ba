"""Live DNS capture against `tcpdump -w`, side by side on the same traffic.

    sudo python benchmarks/bench_live.py [--rate 100000] [--seconds 10] [--sender python]

Two namespaces joined by a veth pair; a sender blasts --rate DNS queries a second for
--seconds across it (from 64 ports, so that no transaction key repeats within the
matching window: docs/dns.md "Matching"): tcpreplay (Debian's package) replaying a
file of those queries when it is installed, else a Python sender (which falls behind
100,000 a second on a busy 2-core machine). On the receiving side, at the same time,
`netsql --capture` and `tcpdump -w FILE` (what a user would run instead) capture the
interface. Reports, for each, what share of the sent queries it got, the kernel drops
it counted, and its CPU time per packet; then netsql's CPU per packet as a ratio of
tcpdump's (issue 16 asks for 1.5x or less).

netsql's CPU per packet is what the packets cost it: its CPU for the same capture
with no traffic, as long and with the same statement after it (python and DuckDB's
start-up, the capture's threads and sockets, the statement on an empty buffer), is
measured in the same run and taken out. The statement's work on the captured rows
stays in. The line "all in" shows netsql's whole CPU (start-up and all) per packet
too, and python and DuckDB's start-up alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The veth pair between the lab's namespaces A (the server, where netsql captures)
#: and B (the sender).
DEV_A, DEV_B = "lcap-a", "lcap-b"
A, B = "livecap-a", "livecap-b"
SERVER, CLIENT = "10.89.0.1", "10.89.0.2"

SENDER = """
import socket, struct, sys, time
rate, seconds, server = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(64)]
for s in socks:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
tail = b'\\x07example\\x03com\\x00\\x00\\x01\\x00\\x01'
msgs = [struct.pack('>HHHHHH', i, 0x0100, 1, 0, 0, 0) + b'\\x09host' +
        str(i % 10000).zfill(5).encode() + tail for i in range(65536)]
total = int(rate * seconds)
start = time.monotonic(); sent = 0
while sent < total:
    due = min(int((time.monotonic() - start) * rate) + 1, total)
    while sent < due:
        try:
            socks[sent & 63].sendto(msgs[(sent >> 6) & 0xFFFF], (server, 53))
        except BlockingIOError:
            break
        sent += 1
    time.sleep(0.0002)
print(sent, time.monotonic() - start)
"""

# Runs a command (SIGTERM to the wrapper stops it with SIGINT), then prints the CPU
# time it and its children used to stderr.
WRAP = ("import resource, signal, subprocess, sys\n"
        "p = subprocess.Popen(sys.argv[1:])\n"
        "signal.signal(signal.SIGTERM, lambda *_: p.send_signal(signal.SIGINT))\n"
        "rc = p.wait()\n"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(f'CPU {u.ru_utime + u.ru_stime:.3f}', file=sys.stderr, flush=True)\n"
        "sys.exit(rc)")


def queries_pcap(path: str, n: int, dst_mac: bytes, src_mac: bytes) -> None:
    """``n`` DNS queries as the Python sender makes them, as Ethernet frames in a pcap
    file (one IPv4 header fits all: every name has the same length)."""
    tail = b"\x07example\x03com\x00\x00\x01\x00\x01"
    dns_len = 12 + 10 + len(tail)
    ip = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + 8 + dns_len, 0, 0x4000, 64,
                               17, 0, socket.inet_aton(CLIENT), socket.inet_aton(SERVER)))
    words = sum(struct.unpack(">10H", ip))
    while words >> 16:
        words = (words & 0xFFFF) + (words >> 16)
    struct.pack_into(">H", ip, 10, ~words & 0xFFFF)
    head = dst_mac + src_mac + b"\x08\x00" + bytes(ip)
    size = len(head) + 8 + dns_len
    record = struct.Struct("<IIII")
    udp = struct.Struct(">HHHH")
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(n):
            dns = struct.pack(">HHHHHH", (i >> 6) & 0xFFFF, 0x0100, 1, 0, 0, 0) + \
                b"\x09host" + str(i % 10000).zfill(5).encode() + tail
            f.write(record.pack(0, 0, size, size) + head
                    + udp.pack(20000 + (i & 63), 53, 8 + dns_len, 0) + dns)


def mac_of(ns: str, dev: str) -> bytes:
    out = subprocess.run(in_ns(ns, "cat", f"/sys/class/net/{dev}/address"), check=True,
                         capture_output=True, text=True).stdout
    return bytes.fromhex(out.strip().replace(":", ""))


def send(rate: int, seconds: float, sender: str, tmp: str) -> tuple[int, float]:
    """Send the queries from namespace B: (how many, seconds it took)."""
    if sender == "tcpreplay":
        path = os.path.join(tmp, "queries.pcap")
        queries_pcap(path, int(rate * seconds), mac_of(A, DEV_A), mac_of(B, DEV_B))
        p = subprocess.run(in_ns(B, "tcpreplay", "-K", f"--pps={rate}", "-i", DEV_B, path),
                           capture_output=True, text=True, check=True)
        found = re.search(r"Actual: (\d+) packets .* sent in ([0-9.]+) seconds", p.stdout)
        if found is None:
            raise SystemExit(f"tcpreplay said: {p.stdout}{p.stderr}")
        os.unlink(path)
        return int(found.group(1)), float(found.group(2))
    out = subprocess.run(in_ns(B, PY, "-c", SENDER, str(rate), str(seconds), SERVER),
                         capture_output=True, text=True, check=True).stdout
    sent, took = out.split()
    return int(sent), float(took)


def in_ns(name: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", name, *cmd]


def setup() -> None:
    teardown()
    for n in (A, B):
        subprocess.run(["ip", "netns", "add", n], check=True)
        subprocess.run(in_ns(n, "ip", "link", "set", "lo", "up"), check=True)
    subprocess.run(["ip", "link", "add", DEV_A, "netns", A, "type", "veth", "peer", "name",
                    DEV_B, "netns", B], check=True)
    for n, dev, addr in ((A, DEV_A, SERVER), (B, DEV_B, CLIENT)):
        subprocess.run(in_ns(n, "ip", "addr", "add", addr + "/24", "dev", dev), check=True)
        subprocess.run(in_ns(n, "ip", "link", "set", dev, "up"), check=True)
    # Nothing listens on port 53: the queries are dropped (the kernel's ICMP rate
    # limit keeps its port-unreachable errors to a trickle; neither capture takes them).


def teardown() -> None:
    for n in (A, B):
        subprocess.run(["ip", "netns", "del", n], capture_output=True)


def cpu_of(stderr: str) -> float:
    return float(re.findall(r"^CPU ([0-9.]+)$", stderr, re.M)[-1])


def number(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    if found is None:
        raise SystemExit(f"tcpdump said no {pattern!r}: {text}")
    return int(found.group(1))


def threads_cpu(wrapper: int) -> tuple[float, float, float]:
    """CPU seconds of the wrapper's child (netsql): its main thread, its busiest other
    thread (the capture's), the rest together."""
    kids = open(f"/proc/{wrapper}/task/{wrapper}/children").read().split()
    pid = int(kids[0])
    tick = os.sysconf("SC_CLK_TCK")
    main, others = 0.0, []
    for t in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{t}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / tick
        if int(t) == pid:
            main = cpu
        else:
            others.append(cpu)
    others.sort(reverse=True)
    return main, (others or [0.0])[0], sum(others[1:])


def startup_cpu() -> float:
    """netsql's CPU for a one-liner that captures nothing (python, DuckDB, the engine)."""
    p = subprocess.run(in_ns(A, PY, "-c", WRAP, PY, "-m", "netsql", "-e", "SELECT 1"),
                       capture_output=True, text=True, check=True, cwd=ROOT)
    return cpu_of(p.stderr)


def start_netsql(buffer: int) -> subprocess.Popen[str]:
    """`netsql --capture` on DEV_A until Ctrl-C (as a user would end it; it then runs
    its statement), wrapped (WRAP), once it said it captures."""
    ours = subprocess.Popen(
        in_ns(A, PY, "-c", WRAP, PY, "-m", "netsql", "--capture", "3600", "-i", DEV_A,
              "--dns-buffer", str(buffer), "--json", "-e",
              "SELECT (SELECT count(*) FROM dns_queries) AS rows, messages, kernel_drops "
              "FROM capture_stats"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert ours.stderr is not None
    line = ours.stderr.readline()
    if not line.startswith("netsql: capturing DNS"):
        raise SystemExit(f"netsql did not start: {line}{ours.stderr.read()}")
    return ours


def idle_cpu(buffer: int, seconds: float) -> float:
    """netsql's CPU for the same capture with no traffic, ``seconds`` long."""
    ours = start_netsql(buffer)
    time.sleep(seconds)
    ours.terminate()  # the wrapper passes it on as SIGINT
    out, err = ours.communicate(timeout=300)
    if ours.returncode or json.loads(out)[0]["messages"]:
        raise SystemExit(f"netsql's idle capture failed or saw traffic: {out}{err}")
    return cpu_of(err)


def side_by_side(rate: int, seconds: float, tmp: str, sender: str
                 ) -> tuple[list[str], float]:
    # Both capture until the sender is done.
    buffer = int(rate * seconds) + 1000
    ours = start_netsql(buffer)
    began = time.monotonic()
    path = os.path.join(tmp, "live.pcap")
    theirs = subprocess.Popen(
        in_ns(A, PY, "-c", WRAP, "tcpdump", "-n", "-i", DEV_A, "-w", path, "udp", "port",
              "53"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert theirs.stderr is not None
    line = theirs.stderr.readline()
    if "listening on" not in line:
        raise SystemExit(f"tcpdump did not start: {line}{theirs.stderr.read()}")
    sent, took = send(rate, seconds, sender, tmp)
    time.sleep(1.0)  # what is in flight reaches both
    theirs.terminate()
    threads = threads_cpu(ours.pid)
    ours.terminate()  # the wrapper passes it on as SIGINT
    window = time.monotonic() - began
    their_err = theirs.communicate(timeout=30)[1]
    out, err = ours.communicate(timeout=300)
    if ours.returncode:
        raise SystemExit(f"netsql failed: {err}")
    stats = json.loads(out)[0]
    captured = number(r"(\d+) packets captured", their_err)
    dropped = number(r"(\d+) packets dropped by kernel", their_err)
    n = int(sent)
    idle = idle_cpu(buffer, window)
    startup = startup_cpu()
    ours_cpu, theirs_cpu = cpu_of(err), cpu_of(their_err)
    messages = max(stats["messages"], 1)
    ours_pp = (ours_cpu - idle) / messages * 1e6
    theirs_pp = theirs_cpu / max(captured, 1) * 1e6
    main, capture, others = threads
    return [
        f"| traffic ({sender}) | {n} DNS queries in {float(took):.1f} s "
        f"({n / float(took):,.0f}/s asked {rate:,}/s) | |",
        f"| netsql --capture | {stats['messages']} messages ({100 * stats['messages'] / n:.2f}%),"
        f" {stats['rows']} dns_queries rows ({100 * stats['rows'] / n:.2f}%), kernel drops "
        f"{stats['kernel_drops']} | CPU {ours_cpu:.2f} s, of which {idle:.2f} s the same "
        f"capture without traffic ({window:.1f} s): {ours_pp:.2f} us a packet |",
        f"| netsql, all in | | {ours_cpu / messages * 1e6:.2f} us a packet "
        f"({ours_cpu / messages * 1e6 / theirs_pp:.1f}x tcpdump -w's); python and DuckDB's "
        f"start-up alone {startup:.2f} s |",
        f"| netsql, where | | its capture thread {capture:.2f} s: "
        f"{capture / max(stats['messages'], 1) * 1e6:.2f} us a packet; its main thread "
        f"{main:.2f} s (start-up); the others {others:.2f} s (process events, attribution, "
        f"flows); the statement after the capture {ours_cpu - main - capture - others:.2f} "
        "s |",
        f"| tcpdump -w | {captured} packets ({100 * captured / n:.2f}%), kernel drops "
        f"{dropped} | CPU {theirs_cpu:.2f} s: {theirs_pp:.2f} us a packet |",
        f"| ratio | netsql's CPU per packet is {ours_pp / theirs_pp:.2f}x tcpdump -w's "
        f"(goal: 1.5x) | |",
    ], ours_pp / theirs_pp


def main() -> None:
    from timing import traffic_args  # (benchmarks/, this script's directory)

    ap = argparse.ArgumentParser()
    ap.add_argument("--sender", choices=("tcpreplay", "python"),
                    default="tcpreplay" if shutil.which("tcpreplay") else "python")
    ap.add_argument("--runs", type=int, default=1, help="side-by-side runs (the median "
                    "ratio is printed last)")
    a = traffic_args(ap, rate=100_000)
    ratios = []
    for _ in range(max(a.runs, 1)):
        setup()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                lines, ratio = side_by_side(a.rate, a.seconds, tmp, a.sender)
        finally:
            teardown()
        ratios.append(ratio)
        print("| what | captured | cost |")
        print("| --- | --- | --- |")
        print("\n".join(lines), flush=True)
    if len(ratios) > 1:
        print(f"ratios {', '.join(f'{r:.2f}' for r in ratios)}: median "
              f"{sorted(ratios)[len(ratios) // 2]:.2f}x (goal: 1.5x)")


if __name__ == "__main__":
    main()
