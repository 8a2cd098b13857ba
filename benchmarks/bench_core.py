"""Core speed, as ratios against what users would run instead, in one run.

    sudo python benchmarks/bench_core.py [--sockets 46000] [--processes 2000] [--runs 5]

Starts benchmarks/loadgen.py to make the busy host (tens of thousands of loopback
sockets across several processes, then thousands of processes), times each pair of
commands end to end (median wall time of --runs runs, after one warm-up): netsql run
locally (`--local`: Python and DuckDB start for each command) and netsql with a
resident `netsql serve` listening (docs/serve.md); and also the statement alone inside
one engine (what a shell user waits for). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import bytecode, loadgen, median_seconds, resident, wall  # noqa: E402

PY = sys.executable


def netsql(sql: str, local: bool = True) -> list[str]:
    return [PY, "-m", "netsql", *(["--local"] if local else []), "--csv", "-e", sql]


def row(what: str, ours: float, theirs: float, baseline: str, target: str) -> str:
    return (f"| {what} | {ours:.3f} s | {baseline} {theirs:.3f} s | {ours / theirs:.2f}x "
            f"| {target} |")


def main() -> None:
    bytecode()
    ap = argparse.ArgumentParser()
    ap.add_argument("--sockets", type=int, default=46000)
    ap.add_argument("--processes", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    from netsql.engine import Engine

    out = ["| what | netsql | baseline | ratio | target |", "| --- | --- | --- | --- | --- |"]
    floor = wall([PY, "-c", "import duckdb; duckdb.connect().sql('select 1')"], a.runs)
    ours = wall([PY, "-m", "netsql", "--local", "-e", "SELECT 1"], a.runs)
    out.append(row("`netsql -e 'SELECT 1'`", ours, floor, "python+duckdb", "<= 1.2x"))
    with resident() as env:
        out.append(row("`netsql -e 'SELECT 1'`, resident", wall(
            [PY, "-m", "netsql", "-e", "SELECT 1"], a.runs, env), floor, "python+duckdb",
            "<= 1.2x"))

    with loadgen("sockets", a.sockets):
        n = int(subprocess.run(["ss", "-tunaH"], capture_output=True, text=True)
                .stdout.count("\n"))
        out.append(f"| ({n} sockets) | | | | |")
        ss = wall("ss -tuna", a.runs)
        ssp = wall("ss -tunap", a.runs)
        q1 = "SELECT state, count(*) FROM sockets GROUP BY ALL"
        q2 = ("SELECT p.pid, p.name, s.local_address, s.local_port, s.remote_address, "
              "s.remote_port, s.state FROM sockets s JOIN processes p USING (pid)")
        out.append(row("sockets without pid, end to end", wall(netsql(q1), a.runs), ss,
                       "`ss -tuna`", "<= 2x"))
        with resident() as env:
            out.append(row("sockets without pid, end to end, resident",
                           wall(netsql(q1, False), a.runs, env), ss, "`ss -tuna`", "<= 2x"))
            out.append(row("sockets JOIN processes, end to end, resident",
                           wall(netsql(q2, False), a.runs, env), ssp, "`ss -tunap`", "<= 1x"))
        eng = Engine()
        out.append(row("sockets without pid, statement in a shell",
                       median_seconds(lambda: list(eng.run(q1)), a.runs), ss, "`ss -tuna`",
                       "<= 2x"))
        out.append(row("sockets JOIN processes, end to end", wall(netsql(q2), a.runs), ssp,
                       "`ss -tunap`", "<= 1x"))
        out.append(row("sockets JOIN processes, statement in a shell",
                       median_seconds(lambda: list(eng.run(q2)), a.runs), ssp, "`ss -tunap`",
                       "<= 1x"))

    with loadgen("processes", a.processes):
        n = len([d for d in os.listdir("/proc") if d.isdigit()])
        out.append(f"| ({n} processes) | | | | |")
        ps = wall("ps -eo pid,ppid,user,comm,args", a.runs)
        q3 = "SELECT * FROM processes"
        out.append(row("`SELECT * FROM processes`, end to end", wall(netsql(q3), a.runs), ps,
                       "`ps -eo pid,ppid,user,comm,args`", "<= 2x"))
        with resident() as env:
            out.append(row("`SELECT * FROM processes`, end to end, resident",
                           wall(netsql(q3, False), a.runs, env), ps, "`ps -eo ...`", "<= 2x"))
        eng = Engine()
        out.append(row("`SELECT * FROM processes`, statement in a shell",
                       median_seconds(lambda: list(eng.run(q3)), a.runs), ps, "`ps -eo ...`",
                       "<= 2x"))
        q4 = f"SELECT * FROM processes WHERE pid = {os.getpid()}"
        one = median_seconds(lambda: list(eng.run(q4)), a.runs)
        out.append(row("`WHERE pid = N`, statement in a shell", one, ps, "`ps -eo ...`",
                       "no walk"))
    print("\n".join(out))


if __name__ == "__main__":
    main()
