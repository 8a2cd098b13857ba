"""Streamed output, as ratios against DuckDB writing the same rows itself, in one run.

    python benchmarks/bench_output.py [--rows 10000000] [--runs 3]

For csv and jsonl: `netsql --local --format F -e Q > /dev/null` against DuckDB's own
`COPY (Q) TO '/dev/stdout'` (in Python, so both pay the same start-up), end to end. The
two run in turns (netsql, COPY, netsql, COPY, ...: a shared machine's load falls on both
alike), one warm-up pair and then --runs pairs; medians of the wall time, of the CPU
time (user + system: steadier than the wall time when other work shares the cores) and
the peak RSS (wait4) of each. Then the time to the first row of each format (`netsql -e
Q | head -1`, to the line holding the first row) beyond the same for a one-row result
(start-up included), in turns. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import bytecode  # noqa: E402

PY = sys.executable


def netsql(fmt: str, sql: str) -> list[str]:
    return [PY, "-m", "netsql", "--local", "--format", fmt, "-e", sql]


def duckdb_copy(fmt: str, sql: str) -> list[str]:
    code = ("import duckdb; duckdb.connect().execute(\"COPY (" + sql.replace('"', '\\"')
            + f") TO '/dev/stdout' (FORMAT {fmt})\")")
    return [PY, "-c", code]


def measured(cmd: list[str]) -> tuple[float, float, float]:
    """One run of ``cmd``, output to /dev/null: (wall s, CPU s, peak RSS MiB). DuckDB's
    COPY TO '/dev/stdout' locks the file, /dev/null: while another process on the
    machine holds that lock, it fails at once; then it runs again."""
    for _ in range(20):
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert p.stderr is not None
        err = p.stderr.read()
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        p.stderr.close()
        if p.returncode == 0:
            return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
        if b"Could not set lock" not in err:
            break
        time.sleep(0.5)
    raise SystemExit(f"{cmd[:6]} exited {p.returncode}: {err.decode(errors='replace')}")


def in_turns(a: list[str], b: list[str], runs: int
             ) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Medians (wall, CPU, peak RSS) of ``a`` and of ``b``, run in turns after a warm-up."""
    measured(a)
    measured(b)
    ours, theirs = [], []
    for _ in range(runs):
        ours.append(measured(a))
        theirs.append(measured(b))

    def med(xs: list[tuple[float, float, float]]) -> tuple[float, float, float]:
        w, c, m = zip(*xs, strict=True)
        return statistics.median(w), statistics.median(c), statistics.median(m)

    return med(ours), med(theirs)


def first_row(cmd: list[str]) -> float:
    """Seconds until the line holding the first row (the value 0) arrives."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert p.stdout is not None
    while (line := p.stdout.readline()) and not re.search(rb"\b0\b", line):
        pass
    seconds = time.perf_counter() - t
    p.kill()
    p.wait()
    p.stdout.close()
    if not line:
        raise SystemExit(f"{cmd[:6]}: no first row")
    return seconds


def first_rows(fmt: str, n: int, runs: int) -> tuple[float, float]:
    """Medians of the time to the first row of range(n) and of range(1), in turns."""
    big, one = netsql(fmt, f"SELECT * FROM range({n})"), netsql(fmt, "SELECT * FROM range(1)")
    first_row(big)
    first_row(one)
    times: list[tuple[float, float]] = [(first_row(big), first_row(one)) for _ in range(runs)]
    return statistics.median(b for b, _ in times), statistics.median(o for _, o in times)


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
    out = [f"| {n:,} rows | netsql wall | COPY wall | wall ratio (goal <= 2x) | rows/s "
           "(goal >= 1,000,000) | netsql CPU | COPY CPU | CPU ratio | peak RSS netsql / "
           "COPY |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, sql in queries.items():
        for fmt, copy_fmt in (("csv", "csv"), ("jsonl", "json")):
            (ours, ocpu, orss), (theirs, tcpu, trss) = in_turns(
                netsql(fmt, sql), duckdb_copy(copy_fmt, sql), a.runs)
            out.append(f"| {fmt}, {label} | {ours:.2f} s | {theirs:.2f} s | "
                       f"{ours / theirs:.2f}x | {n / ours:,.0f} | {ocpu:.2f} s | "
                       f"{tcpu:.2f} s | {ocpu / tcpu:.2f}x | {orss:.0f} / {trss:.0f} MiB |")
            print(out[-1], file=sys.stderr, flush=True)  # progress: a run takes minutes
    out += ["", f"Time to the first row of `SELECT * FROM range({n})`, and beyond the "
            "same for `SELECT * FROM range(1)` (start-up and a one-row result), in turns; "
            "goal < 0.3 s:", "",
            "| format | first row | one-row result | beyond |", "| --- | --- | --- | --- |"]
    for fmt in ("table", "csv", "json", "jsonl", "line", "markdown"):
        big, one = first_rows(fmt, n, max(a.runs, 5))
        out.append(f"| {fmt} | {big:.3f} s | {one:.3f} s | {big - one:.3f} s |")
        print(out[-1], file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    out.append(f"\n(load average {load:.1f} on {os.cpu_count()} cores; "
               f"this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} "
               "MiB)")
    print("\n".join(out))


if __name__ == "__main__":
    main()
