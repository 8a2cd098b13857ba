"""The watch off a terminal: every refresh, or only its changes, for pipelines; ended
cleanly by SIGTERM/SIGINT. The connection test runs the real CLI as a subprocess."""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from netsql.formats.base import ResultSet
from netsql.watch.runner import Refresh, Snapshot
from netsql.watch.stream import Writer, next_tick
from tests.conftest import modules_loaded_by, netsql_cmd, run_netsql

STAMP = "2026-01-02T03:04:05.678Z"


def refresh(n: int, *results: list[tuple[Any, ...]],
            columns: tuple[str, ...] = ("port", "state")) -> Refresh:
    r = Refresh(n, dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC), float(n))
    r.snapshots = [Snapshot(i, "sql", "SELECT", ResultSet(list(columns),
                                                          ["INTEGER", "VARCHAR"], rows))
                   for i, rows in enumerate(results, 1)]
    return r


def test_jsonl_every_refresh_and_changes() -> None:
    every = Writer("jsonl", changes=False, header=True, tty=False, width=0)
    text = every.render(refresh(1, [(22, "LISTEN"), (80, None)]))
    assert [json.loads(x) for x in text.splitlines()] == [
        {"refresh": STAMP, "port": 22, "state": "LISTEN"},
        {"refresh": STAMP, "port": 80, "state": None}]
    changes = Writer("jsonl", changes=True, header=True, tty=False, width=0)
    first = changes.render(refresh(1, [(22, "LISTEN"), (80, "LISTEN")]))
    assert [json.loads(x)["action"] for x in first.splitlines()] == ["added", "added"]
    assert changes.render(refresh(2, [(22, "LISTEN"), (80, "LISTEN")])) == ""
    lines = changes.render(refresh(3, [(80, "LISTEN"), (443, "LISTEN")])).splitlines()
    assert [json.loads(x) for x in lines] == [
        {"refresh": STAMP, "action": "added", "port": 443, "state": "LISTEN"},
        {"refresh": STAMP, "action": "removed", "port": 22, "state": "LISTEN"}]
    assert list(json.loads(lines[0])) == ["refresh", "action", "port", "state"]


def test_field_names_stay_and_statements_are_numbered() -> None:
    w = Writer("jsonl", changes=True, header=True, tty=False, width=0)
    text = w.render(refresh(1, [(1, "x")], [(2, "y")], columns=("refresh", "action")))
    assert [json.loads(x) for x in text.splitlines()] == [
        {"refresh": STAMP, "action": "added", "statement": 1, "refresh_1": 1,
         "action_1": "x"},
        {"refresh": STAMP, "action": "added", "statement": 2, "refresh_1": 2,
         "action_1": "y"}]


def test_csv_json_and_table() -> None:
    csv = Writer("csv", changes=False, header=True, tty=False, width=0)
    assert csv.render(refresh(1, [(22, "LISTEN")])) == (
        f"refresh,port,state\r\n{STAMP},22,LISTEN\r\n")
    assert csv.render(refresh(2, [(22, "LISTEN")])) == f"{STAMP},22,LISTEN\r\n"
    js = Writer("json", changes=True, header=True, tty=False, width=0)
    assert json.loads(js.render(refresh(1, [(22, "LISTEN")]))) == [
        {"refresh": STAMP, "action": "added", "port": 22, "state": "LISTEN"}]
    table = Writer("table", changes=True, header=True, tty=False, width=0)
    text = table.render(refresh(1, [(22, "LISTEN")]))
    assert text.splitlines()[0] == f"-- refresh {STAMP}"
    assert "│ action │ port │ state  │" in text and "│ added  │   22 │ LISTEN │" in text


def test_next_tick_keeps_the_grid() -> None:
    assert next_tick(10.0, 1.0, 10.2) == 11.0
    assert next_tick(10.0, 1.0, 12.5) == 13.0  # an overrun skips the missed ticks
    assert next_tick(10.0, 2.0, 10.0) == 12.0


# -- the CLI as a subprocess ---------------------------------------------------------


class Watcher:
    """``netsql --watch 1 --changes --format jsonl -e SQL``, its lines read as they come."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ)
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(netsql_cmd(*args), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.all: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def rows(self, until: Any, timeout: float = 15) -> list[dict[str, Any]]:
        """Read rows until ``until(rows read so far)`` is true."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not until(got):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; read {got}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.all.append(line)
            got.append(json.loads(line))
        return got

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        rc = self.proc.wait(15)
        time.sleep(0.1)
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        assert self.proc.stderr is not None
        return rc, "".join(self.all + rest), self.proc.stderr.read()


@pytest.fixture
def server() -> Iterator[socket.socket]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    yield srv
    srv.close()


def pair(srv: socket.socket) -> tuple[socket.socket, socket.socket]:
    c = socket.create_connection(srv.getsockname())
    return c, srv.accept()[0]


def test_changes_stream_follows_connections(server: socket.socket) -> None:
    port = server.getsockname()[1]
    stays = pair(server)
    w = Watcher("--watch", "1", "--changes", "--format", "jsonl", "-e",
                "SELECT local_port, remote_port, state FROM sockets WHERE state = "
                f"'ESTABLISHED' AND (local_port = {port} OR remote_port = {port})")
    try:
        kept = stays[0].getsockname()[1]
        baseline = w.rows(lambda got: len(got) == 2)
        assert {(r["local_port"], r["remote_port"], r["action"]) for r in baseline} == {
            (kept, port, "added"), (port, kept, "added")}
        assert len({r["refresh"] for r in baseline}) == 1

        opened = pair(server)
        eph = opened[0].getsockname()[1]
        added = w.rows(lambda got: len(got) == 2)
        assert {(r["local_port"], r["remote_port"], r["action"]) for r in added} == {
            (eph, port, "added"), (port, eph, "added")}
        assert added[0]["refresh"] > baseline[0]["refresh"]

        for s in opened:
            s.close()
        removed = w.rows(lambda got: len(got) == 2)
        assert {(r["local_port"], r["remote_port"], r["action"]) for r in removed} == {
            (eph, port, "removed"), (port, eph, "removed")}
        time.sleep(2.2)  # two more refreshes: the connection that stays says nothing
    finally:
        rc, out, err = w.stop(signal.SIGTERM)
        for s in stays:
            s.close()
    assert rc == 0 and err == ""
    assert out.endswith("}\n") and len(out.splitlines()) == 6  # flushed, nothing more
    assert all(str(kept) not in line for line in out.splitlines()[2:])


def test_sigint_ends_a_plain_stream_with_status_0() -> None:
    w = Watcher("--watch", "0.5", "--format", "jsonl", "-e", "SELECT 42 AS answer")
    rows = w.rows(lambda got: len(got) >= 3)
    rc, out, err = w.stop(signal.SIGINT)
    assert rc == 0 and err == "" and out.endswith("}\n")
    assert [r["answer"] for r in rows] == [42, 42, 42]
    stamps = [dt.datetime.fromisoformat(r["refresh"]) for r in rows]
    assert all(0.3 < (b - a).total_seconds() < 1.5 for a, b in zip(stamps, stamps[1:],
                                                                      strict=False))


def test_usage_and_statement_errors() -> None:
    p = run_netsql("--changes", "-e", "SELECT 1")
    assert p.returncode == 2 and "--changes goes with --watch" in p.stderr
    p = run_netsql("--watch", "1", "--format", "jsonl", "-e", "SELECT nope")
    assert p.returncode == 1 and p.stderr.startswith("netsql: error: ") and not p.stdout
    p = run_netsql("--watch", "1", "--format", "jsonl", "-e", "CREATE TABLE t (a INT)")
    assert p.returncode == 2 and "nothing to watch" in p.stderr
    p = run_netsql("--watch", "0", "-e", "SELECT 1")
    assert p.returncode == 2 and "seconds" in p.stderr
    assert "Traceback" not in p.stderr


def test_setup_statements_run_once_and_sql_from_stdin() -> None:
    """A CREATE before the watched SELECT runs once (else the second refresh would fail);
    a sequence shows that the SELECT runs at every refresh."""
    env = dict(os.environ)
    proc = subprocess.Popen(netsql_cmd("--watch", "0.3", "--format", "csv"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("CREATE SEQUENCE s; SELECT nextval('s') AS packets;")
    proc.stdin.close()
    lines = [proc.stdout.readline() for _ in range(4)]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert lines[0] == "refresh,packets\n"
    assert [line.rstrip().split(",")[1] for line in lines[1:]] == ["1", "2", "3"]


def test_streaming_does_not_import_the_screen_libraries() -> None:
    # SIGTERM once three refreshes are out (whatever the load, no timer).
    status, loaded, out = modules_loaded_by(
        "import os, signal; from netsql.cli import main\n"
        "class Out:\n"
        "    def __init__(self, w): self.w, self.n = w, 0\n"
        "    def __getattr__(self, name): return getattr(self.w, name)\n"
        "    def write(self, text):\n"
        "        self.n += text.count('\"one\": 1')\n"
        "        done = self.w.write(text)\n"
        "        if self.n >= 3: os.kill(os.getpid(), signal.SIGTERM)\n"
        "        return done\n"
        "sys.stdout = Out(sys.stdout)\n"
        "rc = main(['--watch', '0.2', '--format', 'jsonl', '-e', 'SELECT 1 AS one'])")
    assert status == 0 and loaded == "[]", loaded
    assert out.count('"one": 1') >= 3
