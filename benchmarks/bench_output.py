"""Streamed output, as ratios against DuckDB writing the same rows itself, in one run.

    python benchmarks/bench_output.py [--rows 10000000] [--runs 3]

For csv and jsonl: `netsql --local --format F -e Q > /dev/null` against DuckDB's own
`COPY (Q) TO '/dev/stdout'` (in Python, so both pay the same start-up), end to end,
median wall time of --runs runs after one warm-up; rows per second; the child's peak
memory. Then the time to the first row of each format (`netsql -e Q | head -1`) beyond
the start-up of `netsql -e 'SELECT 1'`. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import bytecode, wall  # noqa: E402

PY = sys.executable


def netsql(fmt: str, sql: str) -> list[str]:
    return [PY, "-m", "netsql", "--local", "--format", fmt, "-e", sql]


def duckdb_copy(fmt: str, sql: str) -> list[str]:
    code = ("import duckdb; duckdb.connect().execute(\"COPY (" + sql.replace('"', '\\"')
            + f") TO '/dev/stdout' (FORMAT {fmt})\")")
    return [PY, "-c", code]


def peak_mib(cmd: list[str]) -> float:
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, _, usage = os.wait4(p.pid, 0)
    p.returncode = 0
    return usage.ru_maxrss / 1024


def first_row(cmd: list[str], runs: int) -> float:
    """Median seconds until the first line of output arrives."""
    times = []
    for _ in range(runs + 1):
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert p.stdout is not None
        p.stdout.readline()
        times.append(time.perf_counter() - t)
        p.kill()
        p.wait()
        p.stdout.close()
    return statistics.median(times[1:])


def main() -> None:
    bytecode()
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    n = a.rows
    queries = {
        "one BIGINT": f"SELECT * FROM range({n})",
        "BIGINT, DOUBLE, VARCHAR, BOOLEAN": (
            f"SELECT i, i / 3 AS d, 'host-' || i AS name, i % 2 = 0 AS even "
            f"FROM range({n}) t(i)"),
    }
    out = [f"| {n:,} rows | netsql | DuckDB COPY | ratio (goal <= 2x) | rows/s "
           "(goal >= 1,000,000) | peak RSS |", "| --- | --- | --- | --- | --- | --- |"]
    for label, sql in queries.items():
        for fmt, copy_fmt in (("csv", "csv"), ("jsonl", "json")):
            ours = wall(netsql(fmt, sql), a.runs)
            theirs = wall(duckdb_copy(copy_fmt, sql), a.runs)
            out.append(f"| {fmt}, {label} | {ours:.2f} s | {theirs:.2f} s | "
                       f"{ours / theirs:.2f}x | {n / ours:,.0f} | "
                       f"{peak_mib(netsql(fmt, sql)):.0f} MiB |")
    start = wall([PY, "-m", "netsql", "--local", "-e", "SELECT 1"], a.runs)
    out += ["", f"Time to the first row of `SELECT * FROM range({n})` beyond start-up "
            f"(`netsql -e 'SELECT 1'`: {start:.3f} s); goal < 0.3 s:", "",
            "| format | first row | beyond start-up |", "| --- | --- | --- |"]
    for fmt in ("table", "csv", "json", "jsonl", "line", "markdown"):
        t = first_row(netsql(fmt, f"SELECT * FROM range({n})"), a.runs)
        out.append(f"| {fmt} | {t:.3f} s | {t - start:.3f} s |")
    load = os.getloadavg()[0]
    out.append(f"\n(load average {load:.1f} on {os.cpu_count()} cores; "
               f"this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} "
               "MiB)")
    print("\n".join(out))


if __name__ == "__main__":
    main()
