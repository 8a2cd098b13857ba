"""History: what recording costs and how fast a recorded tree answers.

    sudo python benchmarks/bench_history.py

1. The recorder's CPU in steady state with 10,000 loopback sockets held (5,000
   connections): CPU seconds per wall second of a thread that polls every second, as
   `netsql serve --record` does, measured over 65 s after start-up (one flush).
2. A 30-day tree of 100,000 DNS rows a day: `SELECT count(*) ... WHERE date = ...`
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


def thread_cpu() -> float:
    return time.clock_gettime(time.CLOCK_THREAD_CPUTIME_ID)


def recorder_cost(seconds: float = 65.0) -> None:
    from netsql.history.recorder import Recorder
    from netsql.history.store import Store

    with tempfile.TemporaryDirectory() as tmp, loadgen("sockets", 10_000):
        rec = Recorder(Store(tmp, host="bench"))  # flush every 60 s, as serve does
        stop = threading.Event()
        used: list[float] = []
        warm = threading.Event()

        def run() -> None:
            rec.poll()  # start-up: every connection and process is new once
            rec.flush()
            warm.set()
            start_cpu, start = thread_cpu(), time.monotonic()
            while not stop.wait(rec.poll_seconds):
                rec.poll()
                if time.monotonic() - start >= rec.flush_seconds:
                    rec.flush()
            used.append((thread_cpu() - start_cpu) / (time.monotonic() - start))

        t0 = resource.getrusage(resource.RUSAGE_SELF)
        th = threading.Thread(target=run)
        th.start()
        warm.wait()
        start_up = resource.getrusage(resource.RUSAGE_SELF)
        time.sleep(seconds)
        stop.set()
        th.join()
        conns = sum(1 for k in rec.conns if k[1] == "tcp")
        print(f"recorder, {conns} connections held: start-up "
              f"{start_up.ru_utime + start_up.ru_stime - t0.ru_utime - t0.ru_stime:.2f} s "
              f"CPU; steady state {used[0] * 100:.2f}% of a core (goal < 3%)")


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


if __name__ == "__main__":
    bytecode()
    query_speed()
    if os.geteuid() == 0:
        recorder_cost()
    else:
        print("recorder cost: needs root (every process's sockets)")
