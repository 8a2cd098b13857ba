"""A real recording `netsql serve` in a lab namespace: a beacon that resolves a name,
connects, holds the connection a few seconds and exits comes back from
`netsql --history` (and through the server before any flush), plain DuckDB reads the
same files, kill -9 leaves only readable files, a restart keeps the old rows and
--retain drops an old date partition."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from netsql.history import layout
from netsql.history.store import Store
from netsql.history.tables import DNS_QUERIES
from tests.netlab import APP_V4, Lab, lab

__all__ = ["lab"]  # the fixture

ROOT = Path(__file__).resolve().parent.parent
DNSCLIENT = str(ROOT / "tests" / "dnsclient.py")
ACCEPT = ("import socket, sys\n"
          "s = socket.create_server(('0.0.0.0', int(sys.argv[1])))\n"
          "conns = []\n"
          "while True:\n"
          "    conns.append(s.accept())\n")


def start_serve(lab: Lab, sock: Path, rec: Path, *extra: str) -> subprocess.Popen[str]:
    p = lab.spawn(lab.client, sys.executable, "-m", "netsql", "serve", "--socket",
                  str(sock), "--record", str(rec), "--flush", "1", *extra,
                  stderr=subprocess.PIPE, cwd=str(ROOT))
    assert p.stderr is not None
    seen = []
    while not any(line.startswith("netsql: serving on") for line in seen):
        line = p.stderr.readline()
        assert line, "".join(seen)
        seen.append(line)
    assert any("recording into" in line for line in seen), seen
    return p


def history(lab: Lab, rec: Path, sql: str, **env: str) -> list[dict[str, Any]]:
    res = subprocess.run(["ip", "netns", "exec", lab.client, sys.executable, "-m", "netsql",
                          "--history", str(rec), "--format", "jsonl", "-e", sql],
                         capture_output=True, text=True, timeout=60, cwd=str(ROOT),
                         env={**os.environ, "NETSQL_SOCKET": "", **env})
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def history_q(lab: Lab, rec: Path, name: str, *params: str) -> list[dict[str, Any]]:
    args = ["-q", name]
    for p in params:
        args += ["-p", p]
    res = subprocess.run(["ip", "netns", "exec", lab.client, sys.executable, "-m", "netsql",
                          "--history", str(rec), "--format", "jsonl", *args],
                         capture_output=True, text=True, timeout=60, cwd=str(ROOT),
                         env={**os.environ, "NETSQL_SOCKET": ""})
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def wait_for(what: str, check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_beacon_comes_back_from_history(lab: Lab, tmp_path: Path) -> None:
    rec, sock = tmp_path / "rec", tmp_path / "serve.sock"
    lab.spawn(lab.server, sys.executable, "-c", ACCEPT, "8443")
    wait_for("the listener", lambda: ":8443 " in lab.run(lab.server, "ss", "-ltnH").stdout)
    # Held (in the lab's namespace only): the beacon is long-lived and its DNS socket
    # lives for microseconds, which passive attribution often misses (docs/dns.md);
    # this test is about what history keeps, so its DNS rows must be named.
    server = start_serve(lab, sock, rec, "--hold", "--netns", lab.client)

    beacon = lab.spawn(lab.client, sys.executable, DNSCLIENT, "--connect", "8443", "--hold",
                       "3", "vmp.boldchat.com:A", stdout=subprocess.PIPE)
    assert beacon.stdout is not None
    pid = json.loads(beacon.stdout.readline())["pid"]
    assert json.loads(beacon.stdout.readline())["connected"]
    connected = time.time()
    # Through the server, before any flush of ours: the connection, open.
    def through_server() -> list[dict[str, Any]]:
        res = subprocess.run(
            ["ip", "netns", "exec", lab.client, sys.executable, "-m", "netsql", "--format",
             "jsonl", "-e", f"SELECT state FROM history.connections WHERE pid = {pid}"],
            capture_output=True, text=True, timeout=60, cwd=str(ROOT),
            env={**os.environ, "NETSQL_SOCKET": str(sock)})
        assert res.returncode == 0, res.stderr
        assert "running here" not in res.stderr  # it ran in the server, not locally
        return [json.loads(line) for line in res.stdout.splitlines()]

    assert wait_for("the open connection through the server", through_server) == [
        {"state": "ESTABLISHED"}]
    # The live tables through the recording server: when the connection began, for
    # sockets and for trace-domain's 'connected' row.
    through = subprocess.run(
        ["ip", "netns", "exec", lab.client, sys.executable, "-m", "netsql", "--format",
         "jsonl", "-e", f"SELECT epoch(first_seen) AS t FROM sockets WHERE pid = {pid} "
         "AND remote_port = 8443", "-q", "trace-domain", "-p", "domain=vmp.boldchat.com"],
        capture_output=True, text=True, timeout=60, cwd=str(ROOT),
        env={**os.environ, "NETSQL_SOCKET": str(sock)})
    assert through.returncode == 0, through.stderr
    lines = [json.loads(line) for line in through.stdout.splitlines()]
    assert abs(lines[0]["t"] - connected) <= 2, lines
    [trace] = [r for r in lines if r.get("relation") == "connected" and r["pid"] == pid]
    assert trace["first_seen"] is not None
    beacon.wait(timeout=30)
    closed = time.time()

    conn = wait_for("the connection's end", lambda: history(
        lab, rec, "SELECT epoch(first_seen) AS first, epoch(last_seen) AS last, process, "
        "remote_address, remote_port, state, bytes_sent, community_id, host "
        f"FROM history.connections WHERE pid = {pid} AND state = 'CLOSED'"))
    [c] = conn
    assert (c["remote_address"], c["remote_port"], c["host"]) == (APP_V4, 8443,
                                                                 layout.hostname())
    assert c["process"].startswith("python") and c["bytes_sent"] >= 5
    assert abs(c["first"] - connected) <= 2 and abs(c["last"] - closed) <= 2
    assert c["community_id"].startswith("1:")
    [life] = wait_for("the beacon's process life", lambda: history(
        lab, rec, "SELECT epoch(start_time) AS start, epoch(end_time) AS end, cmdline "
        f"FROM history.processes WHERE pid = {pid} AND end_time IS NOT NULL"))
    assert "dnsclient.py" in life["cmdline"] and abs(life["end"] - closed) <= 2
    assert life["start"] <= c["first"]
    # The capture covers every namespace: the server's saw the query arrive too.
    here = os.stat(f"/run/netns/{lab.client}").st_ino
    asked = wait_for("the beacon's DNS", lambda: history(
        lab, rec, "SELECT pid, answers FROM history.dns_queries "
        f"WHERE query = 'vmp.boldchat.com' AND net_namespace = {here}"))
    assert {a["pid"] for a in asked} == {pid} and asked[0]["answers"] == [APP_V4]
    # The shipped history queries.
    [who] = [w for w in history_q(lab, rec, "who-asked", "domain=VMP.boldchat.com.")
             if w["net_namespace"] == here]
    assert (who["pid"], who["times"], who["answers"]) == (pid, 1, [APP_V4])
    new = history_q(lab, rec, "new-destinations")
    assert [(n["remote_address"], n["remote_port"]) for n in new
            if n["remote_port"] == 8443] == [(APP_V4, 8443)]
    brief = history_q(lab, rec, "short-lived-talkers", "under=30s")
    assert {(b["what"], b["target"]) for b in brief if b["pid"] == pid} == {
        ("asked", "vmp.boldchat.com"), ("connected", f"{APP_V4}:8443")}
    # Plain DuckDB, no netsql: the same files.
    plain = duckdb.connect().execute(
        f"SELECT count(*) FROM read_parquet('{rec}/connections/*/*/*.parquet', "
        f"hive_partitioning = true) WHERE pid = {pid}").fetchone()
    assert plain is not None and plain[0] >= 1

    # kill -9: every file left is whole; a restart appends and --retain drops old days.
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    files = list(rec.rglob("*.parquet"))
    assert files and all(pq.read_metadata(f).num_rows > 0 for f in files)
    before = history(lab, rec, "SELECT count(*) AS n FROM history.connections")[0]["n"]
    old = time.time() - 40 * 86400
    Store(rec).write(DNS_QUERIES, {"ts": [old], "query": ["old.example.test"]})
    old_day = dt.datetime.fromtimestamp(old, dt.UTC).date()
    assert layout.date_dir(rec, "dns_queries", layout.hostname(), old_day).is_dir()
    server = start_serve(lab, sock, rec, "--retain", "30")
    wait_for("--retain", lambda: not layout.date_dir(rec, "dns_queries", layout.hostname(),
                                                     old_day).exists())
    after = history(lab, rec, "SELECT count(*) AS n FROM history.connections")[0]["n"]
    assert after >= before
    server.terminate()
    server.wait(timeout=30)
