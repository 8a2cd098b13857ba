"""Capture in every network namespace: what idle namespaces cost, how fast a new one is
picked up, and the DNS rate kept when the traffic is inside a (container) namespace.

    sudo python benchmarks/bench_netns.py [--namespaces 30] [--seconds 10] [--rate 20000]

1. Idle: `netsql --capture` of one namespace, then of N idle ones (--netns each, so
   other traffic on the host stays out), each for --seconds; the CPU the process used
   from 1 s after its capture opened (start-up and opening every namespace left out)
   to the end of the window, from /proc/PID/stat. Goal (issue 13): under 0.5 s of CPU
   per 10 s beyond the single-namespace capture.
2. Pick-up: with a capture of every namespace running, a namespace is made (`ip netns
   add`) and the time until netsql holds a packet socket in it is measured (goal: 2 s).
3. Rate: a sender blasts --rate DNS queries a second for --seconds inside namespace B,
   to A over a veth pair; netsql runs in the ROOT namespace (--netns A B), tcpdump -w
   runs inside A (what a user would run instead). Share of the queries each got; then
   the same with netsql run inside A (the single-namespace capture of before).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]  # the other benchmarks; the tests' lab helpers (tests/netlab.py)

from bench_live import SENDER, WRAP, cpu_of, number  # noqa: E402
from timing import traffic_args  # noqa: E402

from tests.netlab import capturing  # noqa: E402

PY = sys.executable
PREFIX = "nscap-bn"
A, B = f"{PREFIX}-a", f"{PREFIX}-b"
SERVER, CLIENT = "10.91.0.1", "10.91.0.2"
TICKS = os.sysconf("SC_CLK_TCK")


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (its threads included), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def netsql(*args: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([PY, "-m", "netsql", *args], cwd=ROOT, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stderr is not None
    line = p.stderr.readline()
    if not line.startswith("netsql: capturing DNS"):
        raise SystemExit(f"netsql did not start: {line}{p.stderr.read()}")
    return p


def steady_cpu(seconds: float, spaces: list[str]) -> tuple[float, float]:
    """(CPU seconds from 1 s after the capture opened to the window's end, that span)."""
    args = [a for ns in spaces for a in ("--netns", ns)]
    p = netsql("--capture", str(seconds + 1), *args, "-e", "SELECT 1")
    time.sleep(1.0)
    c0, t0 = cpu_seconds(p.pid), time.monotonic()
    last = c0, t0
    while p.poll() is None:
        try:
            last = cpu_seconds(p.pid), time.monotonic()
        except OSError:
            break
        if last[1] - t0 >= seconds:
            break
        time.sleep(0.05)
    p.communicate(timeout=60)
    return last[0] - c0, last[1] - t0


def idle(n: int, seconds: float) -> list[str]:
    spaces = [f"{PREFIX}-idle{i}" for i in range(n)]
    for ns in spaces:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    try:
        own = str(os.stat("/proc/self/ns/net").st_ino)
        one = [steady_cpu(seconds, [own]) for _ in range(2)]
        many = [steady_cpu(seconds, spaces) for _ in range(2)]
    finally:
        for ns in spaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    one_cpu = min(c / s * 10 for c, s in one)
    many_cpu = min(c / s * 10 for c, s in many)
    return [
        f"| idle, 1 namespace | CPU {one_cpu:.3f} s per 10 s of capture | |",
        f"| idle, {n} namespaces | CPU {many_cpu:.3f} s per 10 s of capture | "
        f"{many_cpu / max(one_cpu, 1e-3):.1f}x the single namespace's |",
        f"| extra for {n} namespaces | {many_cpu - one_cpu:.3f} s of CPU per 10 s "
        f"(goal: under 0.5 s) | |",
    ]


def pickup(tries: int = 5) -> list[str]:
    p = netsql("--capture", "120", "-e", "SELECT 1")
    took = []
    try:
        for i in range(tries):
            ns = f"{PREFIX}-new{i}"
            start = time.monotonic()
            sh("ip", "netns", "add", ns)
            try:
                while not capturing(p.pid, ns):
                    if time.monotonic() - start > 10:
                        break
                    time.sleep(0.01)
                took.append(time.monotonic() - start)
            finally:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    finally:
        p.terminate()
        p.communicate(timeout=60)
    return [f"| a new namespace is captured after | median {statistics.median(took):.2f} s, "
            f"max {max(took):.2f} s over {tries} (goal: 2 s; `ip netns add`: the /run/netns "
            "look every 0.5 s) | |"]


def lab_pair() -> None:
    for n in (A, B):
        sh("ip", "netns", "add", n)
        sh("ip", "-n", n, "link", "set", "lo", "up")
    sh("ip", "link", "add", "nsbn-a", "netns", A, "type", "veth", "peer", "name", "nsbn-b",
       "netns", B)
    for n, dev, addr in ((A, "nsbn-a", SERVER), (B, "nsbn-b", CLIENT)):
        sh("ip", "-n", n, "addr", "add", addr + "/24", "dev", dev)
        sh("ip", "-n", n, "link", "set", dev, "up")


def rate_in_namespace(rate: int, seconds: float, tmp: str, inside: bool) -> list[str]:
    """One run of the sender; netsql from the root namespace (--netns A), or run inside
    A as before namespaces were captured (``inside``); tcpdump -w inside A."""
    window = seconds * 4 + 5
    where = (["ip", "netns", "exec", A] if inside else [])
    ours = subprocess.Popen(
        [*where, PY, "-c", WRAP, PY, "-m", "netsql", "--capture", str(window), "--netns", A,
         "--dns-buffer", str(int(rate * seconds) + 1000), "--json", "-e",
         "SELECT (SELECT count(*) FROM dns_queries) AS rows, messages, kernel_drops "
         "FROM capture_stats"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert ours.stderr is not None
    line = ours.stderr.readline()
    if not line.startswith("netsql: capturing DNS"):
        raise SystemExit(f"netsql did not start: {line}{ours.stderr.read()}")
    path = os.path.join(tmp, "ns.pcap")
    theirs = subprocess.Popen(
        ["ip", "netns", "exec", A, PY, "-c", WRAP, "tcpdump", "-n", "-i", "nsbn-a", "-w",
         path, "udp", "port", "53"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    assert theirs.stderr is not None
    line = theirs.stderr.readline()
    if "listening on" not in line:
        raise SystemExit(f"tcpdump did not start: {line}{theirs.stderr.read()}")
    sender = subprocess.run(["ip", "netns", "exec", B, PY, "-c", SENDER, str(rate),
                             str(seconds), SERVER], capture_output=True, text=True,
                            check=True)
    sent, took = sender.stdout.split()
    time.sleep(1.0)
    theirs.terminate()
    their_err = theirs.communicate(timeout=30)[1]
    out, err = ours.communicate(timeout=window + 120)
    if ours.returncode:
        raise SystemExit(f"netsql failed: {err}")
    stats = json.loads(out)[0]
    n = int(sent)
    captured = number(r"(\d+) packets captured", their_err)
    how = f"run inside {A}" if inside else f"from the root namespace (--netns {A})"
    return [
        f"| traffic in namespace {A} | {n} DNS queries in {float(took):.1f} s "
        f"({n / float(took):,.0f}/s, asked {rate:,}/s) | |",
        f"| netsql --capture {how} | {stats['messages']} messages "
        f"({100 * stats['messages'] / n:.2f}%), {stats['rows']} rows, kernel drops "
        f"{stats['kernel_drops']} | CPU {cpu_of(err):.2f} s |",
        f"| tcpdump -w inside {A}, same traffic | {captured} packets "
        f"({100 * captured / n:.2f}%) | CPU {cpu_of(their_err):.2f} s |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--namespaces", type=int, default=30)
    a = traffic_args(ap, rate=20_000)
    lines = idle(a.namespaces, a.seconds)
    lines += pickup()
    try:
        lab_pair()
        with tempfile.TemporaryDirectory() as tmp:
            for inside in (False, True):
                lines += rate_in_namespace(a.rate, a.seconds, tmp, inside)
    finally:
        for n in (A, B):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
    print("| what | figure | ratio |")
    print("| --- | --- | --- |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
