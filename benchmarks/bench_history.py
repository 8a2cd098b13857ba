"""History: what recording costs and how fast a recorded tree answers.

    sudo python benchmarks/bench_history.py

1. The recorder's CPU in steady state with 10,000 loopback sockets held (5,000
   connections): CPU seconds per wall second of a thread that polls every second, as
   `netsql serve --record` does, measured over 65 s after start-up (one flush).
2. DNS recorded under a flood: a recording `netsql serve` in a namespace while a
   sender blasts 20,000 queries a second for 10 s across a veth pair (benchmarks/
   bench_live.py's lab and sender); the share of queries that reach
   history.dns_queries (goal >= 99.9%).
3. A 30-day tree of 100,000 DNS rows a day: `SELECT count(*) ... WHERE date = ...`
   through the history view, against the same count by DuckDB over one day's files
   named directly (what a user without netsql would run).
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import bytecode, loadgen, median_seconds  # noqa: E402


def recorder_cost(seconds: float = 65.0) -> None:
    """CPU of this process (the recorder's threads: polls, destroy notifications, a
    flush) per wall second, after the start-up pass."""
    from netsql.history.recorder import Recorder
    from netsql.history.store import Store

    def cpu() -> float:
        u = resource.getrusage(resource.RUSAGE_SELF)
        return u.ru_utime + u.ru_stime

    with tempfile.TemporaryDirectory() as tmp, loadgen("sockets", 10_000):
        rec = Recorder(Store(tmp, host="bench"))  # flush every 60 s, as serve does
        c0 = cpu()
        rec.poll()  # start-up: every connection and process is new once
        rec.flush()
        c1, w1 = cpu(), time.monotonic()
        stop = threading.Event()
        runner = threading.Thread(target=rec.run, args=(stop,))
        runner.start()
        time.sleep(seconds)
        c2, w2 = cpu(), time.monotonic()
        stop.set()
        runner.join()
        conns = sum(1 for k in rec.conns if k[1] == "tcp")
        print(f"recorder, {conns} connections held in {len(procfs_namespaces())} namespaces: "
              f"start-up {c1 - c0:.2f} s CPU; steady state {100 * (c2 - c1) / (w2 - w1):.2f}% "
              f"of a core (goal < 3%), polling every {rec.interval:.2f} s")


def procfs_namespaces() -> dict[int, str]:
    from netsql import procfs
    from netsql.collect import Collection

    return procfs.namespaces(Collection())


def query_speed(days: int = 30, per_day: int = 100_000) -> None:
    import duckdb

    from netsql.history.store import Store
    from netsql.history.tables import DNS_QUERIES
    from netsql.history.views import create_views

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp, host="bench")
        end = dt.datetime(2026, 11, 30, tzinfo=dt.UTC).timestamp()
        t = time.perf_counter()
        for d in range(days):
            base = end - (days - d) * 86400
            ts = [base + i * 86400 / per_day for i in range(per_day)]
            store.write(DNS_QUERIES, {
                "ts": ts, "query": [f"host{i % 5000}.example.test" for i in range(per_day)],
                "pid": [i % 300 for i in range(per_day)], "answers": [["192.0.2.1"]] * per_day,
                "status": ["answered"] * per_day})
        print(f"wrote {days} days x {per_day:,} rows in {time.perf_counter() - t:.1f} s")
        day = dt.date(2026, 11, 15)
        con = duckdb.connect()
        create_views(con, tmp)
        sql = f"SELECT count(*), count(DISTINCT query) FROM history.dns_queries " \
              f"WHERE date = DATE '{day}'"
        ours = median_seconds(lambda: con.execute(sql).fetchall(), 5)
        direct = f"SELECT count(*), count(DISTINCT query) FROM read_parquet(" \
                 f"'{tmp}/dns_queries/host=bench/date={day}/*.parquet')"
        theirs = median_seconds(lambda: con.execute(direct).fetchall(), 5)
        assert con.execute(sql).fetchall() == con.execute(direct).fetchall()
        print(f"one day of {days} through history.dns_queries: {ours:.3f} s "
              f"(goal < 0.5 s); the day's files named directly: {theirs:.3f} s; "
              f"ratio {ours / theirs:.2f}x")


def dns_recording(rate: int = 20_000, seconds: float = 10.0) -> None:
    import signal
    import subprocess

    import duckdb

    from benchmarks import bench_live as live

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    live.setup()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sock, rec = os.path.join(tmp, "s.sock"), os.path.join(tmp, "rec")
            serve = subprocess.Popen(
                live.in_ns(live.A, sys.executable, "-m", "netsql", "serve", "--socket", sock,
                           "-i", "nsbl-a", "--dns-buffer", "200000", "--record", rec,
                           "--flush", "2"), stderr=subprocess.PIPE, text=True, cwd=root)
            assert serve.stderr is not None
            while "serving on" not in (line := serve.stderr.readline()):
                if not line:
                    raise SystemExit("netsql serve did not start")
            sender = subprocess.run(live.in_ns(live.B, sys.executable, "-c", live.SENDER,
                                               str(rate), str(seconds), live.SERVER),
                                    capture_output=True, text=True, check=True)
            sent, took = int(sender.stdout.split()[0]), float(sender.stdout.split()[1])
            time.sleep(7)  # unanswered queries are recorded once 5 s pass without answer
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=120)
            got = duckdb.connect().execute(
                f"SELECT count(*) FROM read_parquet('{rec}/dns_queries/*/*/*.parquet')"
            ).fetchone()
            rows = got[0] if got else 0
            print(f"DNS recorded: {rows:,} of {sent:,} queries sent in {took:.1f} s "
                  f"({sent / took:,.0f}/s): {100 * rows / sent:.2f}% (goal >= 99.9%)")
    finally:
        live.teardown()


if __name__ == "__main__":
    bytecode()
    query_speed()
    if os.geteuid() == 0:
        dns_recording()
        recorder_cost()
    else:
        print("recorder cost: needs root (every process's sockets)")
