"""What attribution costs a DNS lookup: added latency, passive and with --hold.

    sudo python benchmarks/bench_hold.py [--lookups 2000] [--fds 13400]

Two namespaces joined by a veth pair, a real dnsmasq in one; from the other, a client
makes --lookups sequential lookups, each from a new UDP socket (as getent and most
stub clients do), and records each one's latency. Run three ways in the same run:
no netsql; `netsql --capture` (passive, the default); `netsql --capture --hold`.
Printed: p50 and p99 per way, and what netsql added to each (goal for the hold:
p99 under 1 ms added, issue 16 item 5). Then the same for a client that also holds
--fds open sockets (issue 12: a 13,400-socket process went from 0.32 ms to 87 ms per
lookup with the old hold's full fd scan; goal: within 1.2x of unheld).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = "10.89.0.1"

CLIENT = """
import json, os, resource, socket, struct, sys, time
n, fds = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (fds + 1024, fds + 1024))
keep = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(fds)]
name = b"\\x03www\\x07example\\x04test\\x00"
out = []
for i in range(n + 50):
    q = struct.pack(">HHHHHH", i & 0xFFFF, 0x100, 1, 0, 0, 0) + name + b"\\0\\1\\0\\1"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    t = time.perf_counter()
    s.sendto(q, (sys.argv[3], 53))
    s.recv(512)
    if i >= 50:  # warm-up
        out.append(time.perf_counter() - t)
    s.close()
print(json.dumps(out))
"""


def ns(name: str, *cmd: str) -> None:
    subprocess.run(["ip", "netns", "exec", name, *cmd], check=True, capture_output=True)


def lab() -> tuple[str, str, subprocess.Popen[bytes]]:
    a, b = "nshold-a", "nshold-b"
    for n in (a, b):
        subprocess.run(["ip", "netns", "del", n], capture_output=True)
        subprocess.run(["ip", "netns", "add", n], check=True)
        ns(n, "ip", "link", "set", "lo", "up")
    subprocess.run(["ip", "link", "add", "nsh-a", "netns", a, "type", "veth", "peer", "name",
                    "nsh-b", "netns", b], check=True)
    ns(a, "ip", "addr", "add", SERVER + "/24", "dev", "nsh-a")
    ns(b, "ip", "addr", "add", "10.89.0.2/24", "dev", "nsh-b")
    ns(a, "ip", "link", "set", "nsh-a", "up")
    ns(b, "ip", "link", "set", "nsh-b", "up")
    dns = subprocess.Popen(["ip", "netns", "exec", a, "dnsmasq", "--keep-in-foreground",
                            "--no-resolv", "--no-hosts", "--bind-interfaces",
                            f"--listen-address={SERVER}", "--local=/test/",
                            "--host-record=www.example.test,10.89.0.10", "--user=root",
                            "--group=root", "--pid-file=/tmp/nshold-dnsmasq.pid"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "netns", "exec", a, "ss", "-lnuH"], capture_output=True,
                             text=True).stdout
        if f"{SERVER}:53" in out:
            break
        time.sleep(0.05)
    return a, b, dns


def lookups(client_ns: str, n: int, fds: int) -> list[float]:
    res = subprocess.run(["ip", "netns", "exec", client_ns, PY, "-c", CLIENT, str(n),
                          str(fds), SERVER], capture_output=True, text=True, check=True)
    return sorted(json.loads(res.stdout))


def netsql(client_ns: str, *flags: str) -> subprocess.Popen[str]:
    p = subprocess.Popen(["ip", "netns", "exec", client_ns, PY, "-m", "netsql", "--capture",
                          "600", *flags, "--dns-buffer", "1000000", "-e", "SELECT 1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         cwd=ROOT)
    assert p.stderr is not None
    line = p.stderr.readline()  # printed once the capture (and hold) are in place
    if not line.startswith("netsql: capturing DNS"):
        raise SystemExit(f"netsql did not start: {line}{p.stderr.read()}")
    return p


def pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument("--fds", type=int, default=13400)
    a = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("dnsmasq"):
        raise SystemExit("needs root and dnsmasq")
    server, client, dns = lab()
    try:
        print("| client | way | p50 ms | p99 ms | added p50 ms | added p99 ms | p50 ratio |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for label, fds in (("new socket per lookup", 0),
                           (f"same, in a process holding {a.fds} sockets", a.fds)):
            base: list[float] = []
            for way, flags in (("no netsql", None), ("netsql passive", ()),
                               ("netsql --hold", ("--hold",))):
                p = netsql(client, *flags) if flags is not None else None
                try:
                    xs = lookups(client, a.lookups, fds)
                finally:
                    if p is not None:
                        p.terminate()
                        p.communicate(timeout=30)
                if flags is None:
                    base = xs
                print(f"| {label} | {way} | {pct(xs, .5):.3f} | {pct(xs, .99):.3f} | "
                      f"{pct(xs, .5) - pct(base, .5):+.3f} | "
                      f"{pct(xs, .99) - pct(base, .99):+.3f} | "
                      f"{pct(xs, .5) / pct(base, .5):.2f}x |", flush=True)
    finally:
        dns.terminate()
        dns.wait()
        for n in (server, client):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


if __name__ == "__main__":
    main()
