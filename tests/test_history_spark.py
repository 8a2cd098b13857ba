"""Fleet path: Spark (local mode, as `spark.read.parquet` on shared storage) reads a
history tree netsql recorded, unchanged: the same row counts as DuckDB, host and date
as partition columns, timestamps intact to the microsecond, no unsigned or decimal
surprises."""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from netsql.history.recorder import Recorder
from netsql.history.store import Store
from netsql.history.tables import DNS_QUERIES
from netsql.history.views import create_views
from tests.conftest import need

DAY = 86400.0


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    need(shutil.which("java") is not None and importlib.util.find_spec("pyspark") is not None,
         "needs Java and pyspark (the Spark fleet test)")
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # loopback only
    session = (SparkSession.builder.master("local[1]").appName("netsql-history")
               .config("spark.ui.enabled", "false").config("spark.sql.session.timeZone", "UTC")
               .config("spark.driver.host", "127.0.0.1").getOrCreate())
    yield session
    session.stop()


def test_spark_reads_a_recorded_tree(tmp_path: Path, spark: Any) -> None:
    from pyspark.sql import functions as F

    now = time.time()
    for host in ("web-1", "db-1"):
        store = Store(tmp_path, host=host)
        store.write(DNS_QUERIES, {
            "ts": [now - 2 * DAY, now - DAY + 0.123456, now],
            "query": ["vmp.boldchat.com", "a.test", "b.test"], "pid": [1, 2, 3],
            "net_namespace": [4026531840] * 3, "answers": [["192.0.2.1"], [], None],
            "rtt_ms": [0.5, None, 1.25]})
    # And what the recorder itself writes: this host's processes and connections.
    rec = Recorder(Store(tmp_path, host="web-1"))
    rec.poll()
    rec.flush()
    con = duckdb.connect()
    create_views(con, tmp_path)
    for table in ("dns_queries", "processes"):
        df = spark.read.parquet(str(tmp_path / table))
        ours = con.execute(f"SELECT count(*), count(DISTINCT host), count(DISTINCT date) "
                           f"FROM read_parquet('{tmp_path}/{table}/*/*/*.parquet', "
                           "hive_partitioning = true)").fetchone()
        theirs = df.agg(F.count("*"), F.countDistinct("host"), F.countDistinct("date")).first()
        assert tuple(theirs) == ours, table
        types = dict(df.dtypes)
        assert types["host"] == "string" and types["date"] == "date", types
        assert not [t for t in types.values() if t.startswith("decimal")], types
    df = spark.read.parquet(str(tmp_path / "dns_queries"))
    assert dict(df.dtypes)["ts"] == "timestamp" and dict(df.dtypes)["pid"] == "int"
    spark_ts = sorted((r[0], r[1], r[2]) for r in df.select(
        "host", "query", F.unix_micros("ts")).collect())
    duck_ts = sorted(con.execute("SELECT host, query, epoch_us(ts) FROM history.dns_queries")
                     .fetchall())
    assert spark_ts == duck_ts and len(spark_ts) == 6
    # One day, one host: partition pruning on both sides gives the same row.
    one = df.where((F.col("host") == "db-1") & (F.col("query") == "a.test")).select(
        F.col("date").cast("string")).first()[0]
    assert con.execute("SELECT date::VARCHAR FROM history.dns_queries WHERE host = 'db-1' "
                       "AND query = 'a.test'").fetchone() == (one,)
