"""Core speed, as ratios against what users would run instead, in one run.

    sudo python benchmarks/bench_core.py [--sockets 40000] [--processes 2000] [--runs 7]

Starts benchmarks/loadgen.py to make the busy host (tens of thousands of loopback
sockets across several processes, then thousands of processes), times each pair of
commands end to end (median wall time of --runs runs, after one warm-up): netsql run
locally (`--local`: Python and DuckDB start for each command) and netsql with a
resident `netsql serve` listening (docs/serve.md); and also the statement alone inside
one engine (what a shell user waits for). Prints a markdown table.

The two commands of a pair run in turn (ours, theirs, ours, ...), so a machine shared
with other work slows both alike; each figure is the median of its runs. Through serve
the /proc caches are warm after the first run (netsql/backends/linux_procs.py reuses a
process's command line, ids, executable, namespace and cgroup for up to 5 s): the
"first" rows show a resident command with cold caches.

netsql and the python+duckdb floor run as a wheel install of netsql runs them: in a
throw-away venv of this Python that has the checkout and this Python's packages on its
path, but not an editable install's import finder, which an editable (development)
checkout runs at every start (timing.installed; 3-4 ms of each command). Until
2026-12-02 the commands ran in the development venv itself.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import statistics  # noqa: E402
import time  # noqa: E402

from timing import bytecode, installed, loadgen, median_seconds, resident  # noqa: E402

#: The Python the commands run with (main: a venv laid out as an installed netsql's).
PY = sys.executable


def netsql(sql: str, local: bool = True) -> list[str]:
    return [PY, "-m", "netsql", *(["--local"] if local else []), "--csv", "-e", sql]


def once(cmd: list[str] | str, env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, shell=isinstance(cmd, str), stdout=subprocess.DEVNULL, check=True,
                   env=env)
    return time.perf_counter() - t


def pair(ours: list[str], theirs: list[str] | str, runs: int,
         env: dict[str, str] | None = None) -> tuple[float, float]:
    """Median wall times of two commands run in turn (after one untimed run of each)."""
    once(ours, env), once(theirs)
    a, b = [], []
    for _ in range(runs):
        a.append(once(ours, env))
        b.append(once(theirs))
    return statistics.median(a), statistics.median(b)


def row(what: str, ours: float, theirs: float, baseline: str, target: str) -> str:
    return (f"| {what} | {ours:.3f} s | {baseline} {theirs:.3f} s | {ours / theirs:.2f}x "
            f"| {target} |")


def main() -> None:
    global PY
    bytecode()
    ap = argparse.ArgumentParser()
    ap.add_argument("--sockets", type=int, default=40000)
    ap.add_argument("--processes", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    with installed() as PY:
        measure(a)


def measure(a: argparse.Namespace) -> None:
    from netsql.engine import Engine

    out = ["| what | netsql | baseline | ratio | target |", "| --- | --- | --- | --- | --- |"]
    floor_cmd = [PY, "-c", "import duckdb; duckdb.connect().sql('select 1')"]
    ours, floor = pair([PY, "-m", "netsql", "--local", "-e", "SELECT 1"], floor_cmd, a.runs)
    out.append(row("`netsql -e 'SELECT 1'`, cold (no serve)", ours, floor, "python+duckdb",
                   "<= 1.2x"))
    with resident() as env:
        ours, floor = pair([PY, "-m", "netsql", "-e", "SELECT 1"], floor_cmd, a.runs, env)
        out.append(row("`netsql -e 'SELECT 1'`, resident", ours, floor, "python+duckdb",
                       "<= 1.2x"))

    q1 = "SELECT state, count(*) FROM sockets GROUP BY ALL"
    q1b = ("SELECT protocol, local_address, local_port, remote_address, remote_port, state "
           "FROM sockets")
    q2 = ("SELECT p.pid, p.name, s.local_address, s.local_port, s.remote_address, "
          "s.remote_port, s.state FROM sockets s JOIN processes p USING (pid)")
    with loadgen("sockets", a.sockets):
        n = int(subprocess.run(["ss", "-tunaH"], capture_output=True, text=True)
                .stdout.count("\n"))
        from netsql.collect import Collection
        from netsql.procfs import namespaces as every_namespace

        # as the sockets table finds them: processes' and `ip netns` ones
        namespaces = len(every_namespace(Collection()))
        out.append(f"| ({n} sockets; netsql reads {namespaces} network namespaces, ss one)"
                   " | | | | |")
        with resident() as env:
            first = once(netsql(q1, False), env)
            out.append(row("sockets without pid, resident, first command", first,
                           once("ss -tuna"), "`ss -tuna`", "<= 1.0x"))
            ours, ss = pair(netsql(q1, False), "ss -tuna", a.runs, env)
            out.append(row("sockets without pid (GROUP BY), resident", ours, ss,
                           "`ss -tuna`", "<= 1.0x"))
            ours, ss = pair(netsql(q1b, False), "ss -tuna", a.runs, env)
            out.append(row("sockets without pid (every row), resident", ours, ss,
                           "`ss -tuna`", "<= 1.0x"))
            ours, ssp = pair(netsql(q2, False), "ss -tunap", a.runs, env)
            out.append(row("sockets JOIN processes, resident", ours, ssp, "`ss -tunap`",
                           "<= 0.5x"))
        ours, ss = pair(netsql(q1), "ss -tuna", a.runs)
        out.append(row("sockets without pid, cold", ours, ss, "`ss -tuna`", "<= 2x"))
        ours, ssp = pair(netsql(q2), "ss -tunap", a.runs)
        out.append(row("sockets JOIN processes, cold", ours, ssp, "`ss -tunap`", "<= 1x"))
        eng = Engine()
        out.append(row("sockets without pid, statement in a shell",
                       median_seconds(lambda: list(eng.run(q1)), a.runs), ss, "`ss -tuna`",
                       "<= 2x"))
        out.append(row("sockets JOIN processes, statement in a shell",
                       median_seconds(lambda: list(eng.run(q2)), a.runs), ssp, "`ss -tunap`",
                       "<= 1x"))

    with loadgen("processes", a.processes):
        n = len([d for d in os.listdir("/proc") if d.isdigit()])
        out.append(f"| ({n} processes) | | | | |")
        ps_cmd = "ps -eo pid,ppid,user,comm,args"
        q3 = "SELECT * FROM processes"
        with resident() as env:
            first = once(netsql(q3, False), env)
            out.append(row("`SELECT * FROM processes`, resident, first command", first,
                           once(ps_cmd), f"`{ps_cmd}`", "<= 1.0x"))
            ours, ps = pair(netsql(q3, False), ps_cmd, a.runs, env)
            out.append(row("`SELECT * FROM processes`, resident", ours, ps, "`ps -eo ...`",
                           "<= 1.0x"))
        ours, ps = pair(netsql(q3), ps_cmd, a.runs)
        out.append(row("`SELECT * FROM processes`, cold", ours, ps, "`ps -eo ...`", "<= 2x"))
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
