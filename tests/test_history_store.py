"""The history tree: files written where layout.py says, read back through the
history.<table> views, retention by age and size, compaction, several hosts, and a
writer killed mid-write leaving only readable files."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from netsql.history import layout
from netsql.history.store import Store
from netsql.history.tables import CONNECTIONS, DNS_QUERIES, PROCESSES, RECORDED
from netsql.history.views import create_views

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC).timestamp()
DAY = 86400.0


def dns(ts: list[float], query: str = "vmp.boldchat.com") -> dict[str, list[object]]:
    n = len(ts)
    return {"ts": ts, "query": [query] * n, "qtype": ["A"] * n, "pid": [4242] * n,
            "answers": [["192.0.2.7"]] * n, "ttls": [[60]] * n, "net_namespace": [1] * n,
            "rtt_ms": [0.25] * n, "status": ["answered"] * n}


def conn(first: float, last: float, inode: int, sent: int) -> dict[str, list[object]]:
    return {"first_seen": [first], "last_seen": [last], "inode": [inode],
            "net_namespace": [1], "pid": [7], "protocol": ["tcp"], "remote_address":
            ["192.0.2.7"], "remote_port": [443], "bytes_sent": [sent], "state": ["ESTABLISHED"]}


def views(root: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    create_views(con, root)
    return con


def test_layout_types_and_views(tmp_path: Path) -> None:
    store = Store(tmp_path, host="h1")
    files = store.write(DNS_QUERIES, dns([NOW - DAY, NOW, NOW + 1]), now=NOW)
    assert [f.relative_to(tmp_path).parts[:3] for f in files] == [
        ("dns_queries", "host=h1", "date=2026-11-19"), ("dns_queries", "host=h1",
                                                         "date=2026-11-20")]
    schema = pq.read_schema(files[0])
    assert str(schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert not [f for f in schema if str(f.type).startswith("uint")]
    assert pq.ParquetFile(files[0]).metadata.row_group(0).column(0).compression == "ZSTD"
    con = views(tmp_path)
    rows = con.execute("SELECT host, date, query, pid, answers, ts FROM history.dns_queries "
                       "ORDER BY ts").fetchall()
    assert [(r[0], str(r[1]), r[2], r[3], r[4]) for r in rows] == [
        ("h1", "2026-11-19", "vmp.boldchat.com", 4242, ["192.0.2.7"])] + [
        ("h1", "2026-11-20", "vmp.boldchat.com", 4242, ["192.0.2.7"])] * 2
    assert rows[1][5] == dt.datetime.fromtimestamp(NOW, dt.UTC)
    # A table with no file yet: an empty view with the declared columns.
    cols = [d[0] for d in con.execute("SELECT * FROM history.processes").description]
    assert cols == [*PROCESSES.column_names, "host", "date"]


def test_date_filter_skips_directories_and_temporaries_are_unseen(tmp_path: Path) -> None:
    store = Store(tmp_path, host="h1")
    store.write(DNS_QUERIES, dns([NOW - 2 * DAY, NOW]), now=NOW)
    old = layout.date_dir(tmp_path, "dns_queries", "h1", dt.date(2026, 11, 18))
    (old / "broken.parquet").write_bytes(b"not parquet at all")
    today = layout.date_dir(tmp_path, "dns_queries", "h1", dt.date(2026, 11, 20))
    (today / ".half-written.parquet.tmp").write_bytes(b"PAR1 cut")
    con = views(tmp_path)
    # The broken file is in a partition the filter excludes: never opened.
    assert con.execute("SELECT count(*) FROM history.dns_queries "
                       "WHERE date = DATE '2026-11-20'").fetchone() == (1,)
    with pytest.raises(duckdb.Error):
        con.execute("SELECT count(*) FROM history.dns_queries").fetchall()


def test_connection_lives_keep_their_newest_observation(tmp_path: Path) -> None:
    store = Store(tmp_path, host="h1")
    store.write(CONNECTIONS, conn(NOW, NOW + 60, 99, 100), now=NOW)
    store.write(CONNECTIONS, conn(NOW, NOW + 120, 99, 5000), now=NOW)
    store.write(CONNECTIONS, conn(NOW + 5, NOW + 6, 100, 1), now=NOW)
    con = views(tmp_path)
    got = con.execute("SELECT inode, bytes_sent, epoch(last_seen - first_seen) "
                      "FROM history.connections ORDER BY inode").fetchall()
    assert got == [(99, 5000, 120.0), (100, 1, 1.0)]


def test_two_hosts_in_one_statement(tmp_path: Path) -> None:
    Store(tmp_path, host="web-1").write(DNS_QUERIES, dns([NOW, NOW + 1]), now=NOW)
    Store(tmp_path, host="db-1").write(DNS_QUERIES, dns([NOW + 2], "other.test"), now=NOW)
    got = views(tmp_path).execute(
        "SELECT host, count(*) FROM history.dns_queries GROUP BY host ORDER BY host").fetchall()
    assert got == [("db-1", 1), ("web-1", 2)]


def test_retain_by_age_and_size_only_this_host(tmp_path: Path) -> None:
    mine, theirs = Store(tmp_path, host="h1", retain_days=30), Store(tmp_path, host="h2")
    for age in (45, 31, 30, 29, 0):
        mine.write(DNS_QUERIES, dns([NOW - age * DAY]), now=NOW)
        mine.write(PROCESSES, {"pid": [1], "start_time": [NOW - age * DAY],
                               "last_seen": [NOW - age * DAY]}, now=NOW)
    theirs.write(DNS_QUERIES, dns([NOW - 45 * DAY]), now=NOW)
    dropped = mine.retain(now=NOW)
    assert [d.isoformat() for d in dropped] == ["2026-10-06", "2026-10-20", "2026-10-21"]
    left = [d.isoformat() for d, _ in layout.dates(tmp_path, "dns_queries", "h1")]
    assert left == ["2026-10-22", "2026-11-20"]
    assert [d.isoformat() for d, _ in layout.dates(tmp_path, "processes", "h1")] == left
    assert len(layout.dates(tmp_path, "dns_queries", "h2")) == 1  # not ours to drop
    # By size: the oldest day goes first, today's stays whatever its size.
    mine.max_bytes = mine.size() - 1
    assert [d.isoformat() for d in mine.retain(now=NOW)] == ["2026-10-22"]
    mine.max_bytes = 1
    assert mine.retain(now=NOW) == []
    assert [d.isoformat() for d, _ in layout.dates(tmp_path, "dns_queries", "h1")] == [
        "2026-11-20"]


def test_compaction_of_finished_days(tmp_path: Path) -> None:
    store = Store(tmp_path, host="h1")
    for i in range(3):
        store.write(DNS_QUERIES, dns([NOW - DAY + i]), now=NOW)
        store.write(CONNECTIONS, conn(NOW - DAY, NOW - DAY + 10 * (i + 1), 5, i), now=NOW)
        store.write(DNS_QUERIES, dns([NOW + i]), now=NOW)
    before = views(tmp_path).execute(
        "SELECT count(*), min(ts) FROM history.dns_queries").fetchone()
    assert store.compact(now=NOW) == 6
    for t in ("dns_queries", "connections"):
        [(day, d)] = [x for x in layout.dates(tmp_path, t, "h1") if x[0].day == 19]
        assert len(layout.data_files(d)) == 1, t
    today = layout.date_dir(tmp_path, "dns_queries", "h1", dt.date(2026, 11, 20))
    assert len(layout.data_files(today)) == 3  # today is still being written
    con = views(tmp_path)
    assert con.execute("SELECT count(*), min(ts) FROM history.dns_queries").fetchone() == before
    assert con.execute("SELECT bytes_sent FROM history.connections").fetchall() == [(2,)]


WRITER = """
import sys, time
from netsql.history.store import Store
from netsql.history.tables import DNS_QUERIES
store = Store(sys.argv[1], host="h1")
n = 0
while True:
    store.write(DNS_QUERIES, {"ts": [time.time()] * 20000, "query": ["x.test"] * 20000})
    n += 1
    if n == 2:  # two files done, the third under way when the parent kills
        print("writing", flush=True)
"""


def test_kill_9_while_writing_leaves_only_readable_files(tmp_path: Path) -> None:
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], text=True,
                         stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent)
    assert p.stdout is not None and p.stdout.readline() == "writing\n"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    finished = list(tmp_path.rglob("*.parquet"))
    assert len(finished) >= 2
    for f in finished:
        assert pq.read_metadata(f).num_rows == 20000
    n = views(tmp_path).execute("SELECT count(*) FROM history.dns_queries").fetchone()
    assert n == (20000 * len(finished),)
    # A restart appends to the same tree.
    Store(tmp_path, host="h1").write(DNS_QUERIES, {"ts": [time.time()], "query": ["y"]})
    assert views(tmp_path).execute("SELECT count(*) FROM history.dns_queries").fetchone() == (
        20000 * len(finished) + 1,)


def test_every_recorded_table_has_signed_types_only() -> None:
    for t in RECORDED:
        assert not [c for c in t.columns if c.type.startswith(("U", "HUGE"))], t.name
        assert t.time_column in t.column_names
        assert set(t.key) <= set(t.column_names)
