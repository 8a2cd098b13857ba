"""The psutil backend's cost against the native one, on one busy Linux host.

    sudo python benchmarks/bench_backend.py [--sockets 40000] [--processes 2000] [--runs 3]

Starts benchmarks/loadgen.py twice (tens of thousands of loopback sockets, then
thousands of sleeping processes, both held at once) and times each statement inside
one engine with NETSQL_BACKEND=native and NETSQL_BACKEND=psutil (median of --runs
runs after one warm-up). "cold" clears the engine's state before each run (the first
statement of a one-liner); "warm" keeps it (a shell or --watch, where the native
reader reuses what has not changed). Prints a markdown table; the ratio is psutil's
time over native's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import bytecode, loadgen, median_seconds, wall  # noqa: E402

STATEMENTS = (
    ("processes, every column", "SELECT * FROM processes"),
    ("processes, pid and name", "SELECT pid, name FROM processes"),
    ("sockets without pid", "SELECT state, count(*) FROM sockets GROUP BY ALL"),
    ("sockets with pid", "SELECT pid, local_port, remote_port, state FROM sockets"),
    ("sockets JOIN processes", "SELECT p.pid, p.name, s.local_port, s.remote_address, "
     "s.remote_port, s.state FROM sockets s JOIN processes p USING (pid)"),
    ("listening_ports", "SELECT * FROM listening_ports"),
    ("interfaces", "SELECT * FROM interfaces"),
)


def timed(engine: object, sql: str, backend: str, runs: int, cold: bool) -> float:
    os.environ["NETSQL_BACKEND"] = backend

    def once() -> None:
        if cold:
            engine.state.caches.clear()  # type: ignore[attr-defined]
        list(engine.run(sql))  # type: ignore[attr-defined]

    return median_seconds(once, runs)


def main() -> None:
    bytecode()
    ap = argparse.ArgumentParser()
    ap.add_argument("--sockets", type=int, default=40000)
    ap.add_argument("--processes", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    from netsql.engine import Engine

    with loadgen("sockets", a.sockets), loadgen("processes", a.processes):
        n_socks = subprocess.run(["ss", "-tunaH"], capture_output=True,
                                 text=True).stdout.count("\n")
        n_procs = len([d for d in os.listdir("/proc") if d.isdigit()])
        print(f"{n_procs} processes, {n_socks} TCP/UDP sockets, median of {a.runs} runs\n")
        print("| statement | state | native | psutil | psutil / native |")
        print("| --- | --- | --- | --- | --- |")
        engine = Engine()
        for what, sql in STATEMENTS:
            for cold in (True, False):
                native = timed(engine, sql, "native", a.runs, cold)
                theirs = timed(engine, sql, "psutil", a.runs, cold)
                print(f"| {what} | {'cold' if cold else 'warm'} | {native:.3f} s "
                      f"| {theirs:.3f} s | {theirs / native:.1f}x |", flush=True)
        print("\nFor scale, the tools (end to end, a process each):\n")
        for cmd in ("ps -eo pid,ppid,user,comm,args", "ss -tuna", "ss -tunap"):
            print(f"- `{cmd}`: {wall(cmd, a.runs):.3f} s")


if __name__ == "__main__":
    main()
