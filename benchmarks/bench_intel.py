"""Threat-intel speed: import and matching, against the targets of issue #7.

    python benchmarks/bench_intel.py [--hosts 200000] [--indicators 1000000]
                                     [--queries 10000] [--runs 3] [--dir /tmp/netsql-bench]

1. `netsql intel import` of a generated StevenBlack-style hosts file (preamble,
   comments, several names on some lines), end to end as a command (target: < 3 s for
   200,000 lines).
2. Matching DNS queries against domain indicators: the `flagged` view (and the
   `intel_domain_match` macro) over a dns_queries table of generated queries (a tenth
   are subdomains of listed domains, a tenth look-alikes that must not match), inside
   one engine after the first statement attached the database (target: < 1 s for
   10,000 queries against 1,000,000 indicators). sockets, processes and flows are empty
   stand-ins so that only matching is timed.

Generated files go to --dir and are removed afterwards; nothing is committed. Prints a
markdown table (median of --runs).

    python benchmarks/bench_intel.py --feed-mb 100 1000 [--dir /tmp/netsql-bench]

3. Memory of `netsql intel import` (issue 15 item 17: <= 200 MB whatever the input):
   for each size, a generated feed of that many MB of unique domains, one a line, is
   imported into a new database; peak RSS (wait4) and time, against what a user would
   run instead in the same run: DuckDB's own read_csv + INSERT (DISTINCT) of the same
   file into a database file, with DuckDB's default settings. Only this runs when
   --feed-mb is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shutil
import string
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # timing; the tests' helpers
from timing import bytecode, median_seconds  # noqa: E402

# A launcher that forks the command and writes its peak RSS (KB) to argv[1]: Linux keeps
# the peak of the process a child was forked from across exec.
from tests.test_intel_limits import LAUNCHER  # noqa: E402

PY = sys.executable
PREAMBLE = """# Title: StevenBlack/hosts (generated for netsql's benchmark)
#
# Date: 01 January 2026 00:00:00 (UTC)
# Number of unique domains: {n}
# ===============================================================

127.0.0.1 localhost
127.0.0.1 localhost.localdomain
127.0.0.1 local
255.255.255.255 broadcasthost
::1 localhost
::1 ip6-localhost
::1 ip6-loopback
fe80::1%lo0 localhost
ff00::0 ip6-localnet
ff00::0 ip6-mcastprefix
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
ff02::3 ip6-allhosts
0.0.0.0 0.0.0.0

# Start StevenBlack
"""


def names(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    tlds = ["com", "net", "org", "ru", "info", "xyz", "co.uk", "top"]
    out: set[str] = set()
    while len(out) < n:
        label = "".join(rnd.choices(string.ascii_lowercase + string.digits + "-",
                                    k=rnd.randint(4, 14))).strip("-") or "x"
        sub = rnd.choice(["", "", "ads.", "cdn.", "track.", "www."])
        out.add(f"{sub}{label}.{rnd.choice(tlds)}")
    return sorted(out, key=lambda _: rnd.random())


def write_hosts(path: str, n: int) -> None:
    doms = names(n, 1)
    with open(path, "w") as f:
        f.write(PREAMBLE.format(n=n))
        for i, d in enumerate(doms):
            if i % 1000 == 0:
                f.write(f"\n# section {i // 1000}\n")
            f.write(f"0.0.0.0 {d}\n")


DUCKDB_IMPORT = """
import sys, duckdb
con = duckdb.connect(sys.argv[2])
con.execute("CREATE TABLE indicators (indicator VARCHAR)")
con.execute("INSERT INTO indicators SELECT DISTINCT indicator FROM read_csv(?, header=false, "
            "columns={'indicator': 'VARCHAR'}, delim='\\t')", [sys.argv[1]])
"""


def write_feed(path: str, megabytes: int) -> int:
    """A feed of unique domains, one a line, of about ``megabytes`` MB; its line count."""
    size = megabytes * 1_000_000
    written = i = 0
    with open(path, "w") as f:
        while written < size:
            chunk = "".join(f"h{j:x}.example-{j % 997}.com\n" for j in range(i, i + 100_000))
            f.write(chunk)
            written += len(chunk)
            i += 100_000
    return i


def measured(cmd: list[str], peak_file: str) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MB) of ``cmd``, which must succeed."""
    t = time.perf_counter()
    r = subprocess.run([PY, "-c", LAUNCHER, peak_file, *cmd], capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed ({r.returncode}): {r.stderr.strip()}")
    with open(peak_file) as f:
        return took, int(f.read()) / 1024


def feed_memory(sizes: list[int], work: str) -> None:
    rows = ["| feed | `netsql intel import` peak RSS | time | DuckDB read_csv + INSERT "
            "peak RSS | time | netsql/DuckDB time |", "| --- | --- | --- | --- | --- | --- |"]
    for mb in sizes:
        feed, peak = os.path.join(work, "feed.txt"), os.path.join(work, "peak")
        lines = write_feed(feed, mb)
        size = os.path.getsize(feed)
        db1, db2 = os.path.join(work, "intel.duckdb"), os.path.join(work, "plain.duckdb")
        t1, m1 = measured([PY, "-m", "netsql", "intel", "import", feed, "--source", "feed",
                           "--format", "domains", "--intel-db", db1], peak)
        t2, m2 = measured([PY, "-c", DUCKDB_IMPORT, feed, db2], peak)
        for f in (feed, db1, db2):
            os.remove(f)
        rows.append(f"| {size:,} bytes, {lines:,} unique domains | {m1:.0f} MB | {t1:.1f} s | "
                    f"{m2:.0f} MB | {t2:.1f} s | {t1 / t2:.1f}x |")
        print(rows[-1], flush=True)
    print("\n".join(rows))


def main() -> None:
    bytecode()
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=200_000)
    ap.add_argument("--indicators", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/netsql-bench-intel")
    ap.add_argument("--feed-mb", type=int, nargs="+", metavar="MB",
                    help="only measure the memory of importing feeds of these sizes")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    if a.feed_mb:
        try:
            feed_memory(a.feed_mb, a.dir)
        finally:
            shutil.rmtree(a.dir, ignore_errors=True)
        return
    rows = ["| what | time | target |", "| --- | --- | --- |"]
    try:
        # 1. import of a hosts file, as a command
        hosts, db1 = os.path.join(a.dir, "hosts"), os.path.join(a.dir, "import.duckdb")
        write_hosts(hosts, a.hosts)
        lines = sum(1 for _ in open(hosts))
        cmd = [PY, "-m", "netsql", "intel", "import", hosts, "--intel-db", db1]
        subprocess.run(cmd, check=True, capture_output=True)  # warm-up (page cache, .pyc)
        t_import = median_seconds(lambda: subprocess.run(cmd, check=True, capture_output=True),
                          a.runs)
        rows.append(f"| `netsql intel import` of a {lines:,}-line hosts file "
                    f"(re-import, replacing) | {t_import:.2f} s | < 3 s |")

        # 2. matching
        from netsql.intel import db, files
        doms = names(a.indicators, 2)
        big = os.path.join(a.dir, "domains.txt")
        with open(big, "w") as f:
            f.write("# generated\n" + "\n".join(doms) + "\n")
        db2 = os.path.join(a.dir, "match.duckdb")
        t = time.perf_counter()
        batch = files.parse(big, "domains")
        con = db.open_db(db2)
        db.import_batch(con, batch, "big", big, "")
        con.close()
        t_big = time.perf_counter() - t
        rows.append(f"| import of {len(batch):,} domain indicators (in process) "
                    f"| {t_big:.2f} s | |")

        rnd = random.Random(3)
        queries = []
        for i in range(a.queries):
            if i % 10 == 0:
                queries.append("a." + rnd.choice(doms))  # a subdomain: must match
            elif i % 10 == 1:
                queries.append("not" + rnd.choice(doms))  # a look-alike: must not
            else:
                queries.append(f"q{i}.example-{rnd.randint(0, 999)}.com")
        engine, expected = _engine(db2, queries, set(doms))
        t_first = median_seconds(lambda: list(engine.run("SELECT 1 FROM intel LIMIT 1")), 1)
        rows.append(f"| first statement naming `intel` (macros, views, attach) "
                    f"| {t_first:.3f} s | |")
        got: list[Any] = []

        def flagged() -> None:
            data = list(engine.run("SELECT count(*) FROM flagged"))[-1].data
            assert data is not None
            got[:] = data.rows

        t_flag = median_seconds(flagged, a.runs)
        assert got[0][0] == expected, (got, expected)
        rows.append(f"| `SELECT count(*) FROM flagged`: {a.queries:,} DNS queries against "
                    f"{len(batch):,} domain indicators ({expected:,} hits; collection "
                    f"included) | {t_flag:.3f} s | < 1 s |")
        t_macro = median_seconds(lambda: list(engine.run(
            "SELECT count(*) FROM dns_queries WHERE len(intel_domain_match(query)) > 0")), a.runs)
        rows.append(f"| same with `intel_domain_match(query)` in WHERE | {t_macro:.3f} s | |")
    finally:
        shutil.rmtree(a.dir, ignore_errors=True)
    print("\n".join(rows))


def _engine(path: str, queries: list[str], listed: set[str]) -> tuple[Any, int]:
    from netsql.collect import State
    from netsql.engine import Engine
    from netsql.registry import default_tables

    def dns(coll: Any, need: Any) -> dict[str, list[Any]]:
        n = len(queries)
        return {"ts": [time.time()] * n, "query": queries, "pid": [1] * n,
                "process": ["bench"] * n, "answers": [[]] * n, "answer_types": [[]] * n}

    def empty(coll: Any, need: Any) -> dict[str, list[Any]]:
        return {}

    tables = []
    for t in default_tables():
        if t.name == "dns_queries":
            t = dataclasses.replace(t, collect=dns)
        elif t.name in ("sockets", "processes", "flows"):
            t = dataclasses.replace(t, collect=empty)
        tables.append(t)
    expected = 0
    for q in queries:
        labels = q.split(".")
        expected += sum(1 for i in range(len(labels)) if ".".join(labels[i:]) in listed)
    return Engine(tables, state=State(intel_db=path)), expected


if __name__ == "__main__":
    main()
