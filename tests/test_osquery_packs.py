"""osquery packs: parsing, the shipped pack, results-log lines and differential
added/removed lines for a socket that opens and closes."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from netsql.osquery.packs import PackError, load_pack, parse_pack, shipped_packs
from tests.conftest import netsql_cmd, run_netsql

LOG_KEYS = ["name", "hostIdentifier", "calendarTime", "unixTime", "epoch", "counter",
            "numerics", "columns", "action"]


def test_parse_pack_like_osquery() -> None:
    text = ('{\n  // comment\n  # another\n  "platform": "linux,darwin",\n'
            '  "discovery": ["SELECT 1"],\n  "queries": {\n'
            '    "a": {"query": "SELECT * \\\n FROM time;", "interval": "60"},\n'
            '    "b": {"query": "SELECT 1;", "platform": "windows", "snapshot": true}\n'
            "  }\n}\n")
    pack = parse_pack(text, "p")
    assert [(q.name, q.query, q.interval, q.runs_here()) for q in pack.queries] == [
        ("a", "SELECT *  FROM time;", 60, True), ("b", "SELECT 1;", None, False)]
    assert pack.queries[1].snapshot and pack.discovery == ["SELECT 1"]
    assert pack.log_name(pack.queries[0]) == "pack_p_a"
    with pytest.raises(PackError, match="not JSON"):
        parse_pack("{", "p")
    with pytest.raises(PackError, match='no "queries"'):
        parse_pack('{"query": 1}', "p")
    with pytest.raises(PackError, match="has no \"query\""):
        parse_pack('{"queries": {"x": {}}}', "p")


def test_shipped_pack_is_found_by_name() -> None:
    """(tests/test_packaging.py checks that the wheel holds it.)"""
    assert "incident-response" in shipped_packs()
    pack = load_pack("incident-response")
    assert len(pack.queries) >= 10


def check_line(line: dict[str, Any]) -> None:
    assert list(line) == LOG_KEYS or list(line) == LOG_KEYS[:7] + ["snapshot", "action"]
    assert line["hostIdentifier"] == socket.gethostname()
    assert re.fullmatch(r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} UTC", line["calendarTime"])
    assert isinstance(line["unixTime"], int) and abs(line["unixTime"] - time.time()) < 600
    assert line["epoch"] == 0 and line["numerics"] is False
    for cols in ([line["columns"]] if "columns" in line else line["snapshot"]):
        assert all(isinstance(v, str) for v in cols.values())
        assert list(cols) == sorted(cols)


def test_shipped_pack_runs() -> None:
    done = run_netsql("--osquery", "--pack", "incident-response", "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    for line in lines:
        check_line(line)
        assert line["action"] == "added" and line["counter"] == 0
    names = {line["name"] for line in lines}
    assert {"pack_incident-response_shell_users", "pack_incident-response_etc_hosts",
            "pack_incident-response_open_files"} <= names
    assert "pack_incident-response_launchd: skipped (platform darwin)" in done.stderr
    table = run_netsql("--pack", "incident-response")
    assert table.returncode == 0, table.stderr
    for q in load_pack("incident-response").queries:
        if q.runs_here():
            assert f"-- pack_incident-response_{q.name}\n" in table.stdout


def test_pack_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text('{"queries": {"x": "SELECT 1"}}')
    done = run_netsql("--pack", str(bad))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "query 'x' has no \"query\" text" in done.stderr
    failing = tmp_path / "failing.conf"
    failing.write_text('{"queries": {"bad": {"query": "SELECT * FROM nosuch;"}, '
                       '"good": {"query": "SELECT 1 AS one;", "snapshot": true}}}')
    done = run_netsql("--pack", str(failing), "--format", "json")
    assert done.returncode == 1
    assert "pack_failing_bad: no such table: nosuch" in done.stderr
    (line,) = [json.loads(x) for x in done.stdout.splitlines()]
    check_line(line)
    assert (line["name"], line["action"], line["snapshot"]) == (
        "pack_failing_good", "snapshot", [{"one": "1"}])


def test_pack_usage_errors() -> None:
    done = run_netsql("--pack", "incident-response", "-e", "SELECT 1")
    assert done.returncode == 2 and "does not go with -e" in done.stderr
    done = run_netsql("--pack", "incident-response", "--changes")
    assert done.returncode == 2 and "--changes goes with --watch" in done.stderr


def test_watch_without_changes_logs_snapshots(tmp_path: Path) -> None:
    pack = tmp_path / "t.conf"
    pack.write_text('{"queries": {"one": {"query": "SELECT 1 AS a, NULL AS b;"}}}')
    proc = subprocess.Popen(netsql_cmd("--pack", str(pack), "--format", "jsonl", "--watch",
                                       "0.2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, NETSQL_SOCKET=""))
    try:
        lines = read_lines(proc, 2, 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert [(x["action"], x["snapshot"], x["counter"]) for x in lines] == [
        ("snapshot", [{"a": "1", "b": ""}], 0), ("snapshot", [{"a": "1", "b": ""}], 1)]
    for x in lines:
        check_line(x)


def read_lines(proc: subprocess.Popen[str], want: int, timeout: float) -> list[dict[str, Any]]:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        if sel.select(timeout=max(deadline - time.monotonic(), 0)):
            line = proc.stdout.readline()
            if not line:
                break
            out.append(json.loads(line))
    return out


def test_differential_lines_for_a_socket_that_opens_and_closes(tmp_path: Path) -> None:
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen()
    port = lst.getsockname()[1]
    pack = tmp_path / "probe.conf"
    pack.write_text(json.dumps({"queries": {"listener": {
        "query": "SELECT port, protocol, address, pid FROM listening_ports "
                 f"WHERE port = {port};", "interval": 1}}}))
    env = dict(os.environ, NETSQL_SOCKET="")
    proc = subprocess.Popen(netsql_cmd("--osquery", "--pack", str(pack), "--format", "jsonl",
                                       "--watch", "0.2", "--changes"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        (added,) = read_lines(proc, 1, 30)
        lst.close()
        (removed,) = read_lines(proc, 1, 30)
    finally:
        lst.close()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    cols = {"address": "127.0.0.1", "pid": str(os.getpid()), "port": str(port),
            "protocol": "6"}
    for line, action in ((added, "added"), (removed, "removed")):
        check_line(line)
        assert (line["name"], line["columns"], line["action"]) == (
            "pack_probe_listener", cols, action)
    assert added["counter"] == 0 and removed["counter"] > 0
