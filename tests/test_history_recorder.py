"""The recorder with real parts: real child processes holding real TCP connections,
the kernel's destroy notifications, flushed to a real history tree and read back
through the history views."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from netsql.history.recorder import Recorder
from netsql.history.store import Store
from netsql.history.views import create_views
from tests.conftest import need

CLIENT = r"""
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print("connected", s.getsockname()[1], flush=True)
for line in sys.stdin:
    if line.startswith("send"):
        s.sendall(b"x" * int(line.split()[1]))
        print("sent", flush=True)
    if line.startswith("close"):
        s.close()
        print("closed", flush=True)
        break
"""


def drain(conn: socket.socket) -> None:
    """Read until the peer closes, then close too (as a server would)."""
    while conn.recv(65536):
        pass
    conn.close()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    accepted: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            accepted.append(conn)
            threading.Thread(target=drain, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield srv
    srv.close()
    for c in accepted:
        c.close()


def ended(rec: Recorder, lport: int, rport: int) -> bool:
    with rec.lock:
        return any(k[4] == lport and k[6] == rport and life.ended
                   for k, life in rec.conns.items())


def brief_life_ended(rec: Recorder) -> bool:
    with rec.lock:
        return any(life.ended and "netsql-brief-life" in (life.values["cmdline"] or "")
                   for life in rec.procs.values())


def history(root: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    create_views(con, root)
    return con


def tell(p: subprocess.Popen[str], line: str, answer: str) -> None:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(line + "\n")
    p.stdin.flush()
    assert p.stdout.readline().startswith(answer)


def test_connection_and_process_lives(tmp_path: Path, listener: socket.socket) -> None:
    need(os.geteuid() == 0, "needs root to name other processes' sockets")
    rec = Recorder(Store(tmp_path, host="lab"))
    port = listener.getsockname()[1]
    child = subprocess.Popen([sys.executable, "-c", CLIENT, str(port)], text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout is not None
    cport = int(child.stdout.readline().split()[1])
    t0 = time.time()
    rec.poll()
    tell(child, "send 5000", "sent")
    rec.poll()
    rec.flush()  # a life still going is written with its values so far
    tell(child, "close", "closed")
    child.wait(timeout=10)
    rec.poll()
    t1 = time.time()
    assert rec.flush() > 0
    con = history(tmp_path)
    rows = con.execute(
        "SELECT pid, process, protocol, remote_port, bytes_sent, state, community_id, "
        "epoch(first_seen), epoch(last_seen), host FROM history.connections "
        "WHERE local_port = ? AND remote_port = ?", [cport, port]).fetchall()
    assert len(rows) == 1, rows
    pid, process, proto, rport, sent, state, cid, first, last, host = rows[0]
    assert (pid, proto, rport, state, host) == (child.pid, "tcp", port, "CLOSED", "lab")
    assert process.startswith("python") and sent >= 5000 and cid.startswith("1:")
    assert t0 - 0.5 <= first <= last <= t1 + 0.5
    life = con.execute("SELECT name, epoch(start_time), epoch(end_time) FROM "
                       "history.processes WHERE pid = ?", [child.pid]).fetchall()
    assert len(life) == 1 and life[0][0].startswith("python")
    assert life[0][1] <= first and t0 - 1 <= life[0][2] <= t1 + 0.5


def test_a_connection_between_polls_comes_from_the_destroy_notification(
        tmp_path: Path, listener: socket.socket) -> None:
    need(os.geteuid() == 0, "needs root for sock_diag destroy notifications")
    rec = Recorder(Store(tmp_path, host="lab"), poll_seconds=30, flush_seconds=3600)
    stop = threading.Event()
    runner = threading.Thread(target=rec.run, args=(stop,))
    runner.start()
    try:
        assert rec.watching.wait(10), "destroy notifications never subscribed"
        port = listener.getsockname()[1]
        quick = [socket.create_connection(("127.0.0.1", port)) for _ in range(1)]
        lport = quick[0].getsockname()[1]
        quick[0].sendall(b"y" * 1000)
        t0 = time.time()
        quick[0].close()
        deadline = time.monotonic() + 10
        while not ended(rec, lport, port):
            assert time.monotonic() < deadline, "no destroy notification recorded"
            time.sleep(0.02)
    finally:
        stop.set()
        runner.join(timeout=30)
    # (by both ports: a busy host's other loopback clients may share the local port)
    rows = history(tmp_path).execute(
        "SELECT state, bytes_sent, epoch(last_seen) FROM history.connections "
        "WHERE local_port = ? AND remote_port = ?", [lport, port]).fetchall()
    assert len(rows) == 1 and rows[0][0] == "CLOSED" and rows[0][1] >= 1000, rows
    assert abs(rows[0][2] - t0) < 2


def test_a_process_between_polls_comes_from_the_process_events(tmp_path: Path) -> None:
    need(os.geteuid() == 0, "needs root for the kernel's process events")
    rec = Recorder(Store(tmp_path, host="lab"), poll_seconds=30, flush_seconds=3600)
    stop = threading.Event()
    runner = threading.Thread(target=rec.run, args=(stop,))
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while rec.proc_watch is None:
            assert time.monotonic() < deadline, f"no process events: {rec.errors}"
            time.sleep(0.01)
        t0 = time.time()
        child = subprocess.run([sys.executable, "-c", "import time; time.sleep(0.2)",
                                "netsql-brief-life"], check=True)
        assert child.returncode == 0
        t1 = time.time()
        deadline = time.monotonic() + 10
        while not brief_life_ended(rec):
            assert time.monotonic() < deadline, "the brief process was not recorded"
            time.sleep(0.02)
    finally:
        stop.set()
        runner.join(timeout=30)
    rows = history(tmp_path).execute(
        "SELECT epoch(start_time), epoch(end_time) FROM history.processes "
        "WHERE cmdline LIKE '%netsql-brief-life%'").fetchall()
    assert len(rows) == 1
    start, end = rows[0]
    assert t0 - 1 <= start <= end <= t1 + 0.5 and end - start < 5


PAIR = r"""
import socket, sys
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(4)
print("ready", flush=True)
for line in sys.stdin:
    if line.startswith("connect"):
        c = socket.create_connection(srv.getsockname())
        a, _ = srv.accept()
        print("connected", c.getsockname()[1], srv.getsockname()[1], flush=True)
    if line.startswith("close"):
        c.close()
        a.close()
        print("closed", flush=True)
        break
"""


def life_of(rec: Recorder, lport: int, rport: int) -> dict[str, object] | None:
    with rec.lock:
        for key, life in rec.conns.items():
            if key[4] == lport and key[6] == rport:
                return dict(life.values, ended=life.ended)
    return None


def wait_life(rec: Recorder, lport: int, rport: int, ended: bool) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while True:
        life = life_of(rec, lport, rport)
        if life is not None and life["ended"] == ended:
            return life
        assert time.monotonic() < deadline, \
            f"no such life: {lport}->{rport} {life} {rec.errors} {rec.kernel.overruns}"
        time.sleep(0.02)


@pytest.mark.parametrize("where", ["host", "new netns"])
def test_tcp_connections_are_dated_by_their_syn_and_fin(tmp_path: Path, where: str) -> None:
    """With TCP dumps 30 s apart (a host with many sockets), a connection's life still
    starts at its SYN (with its process, looked up as the SYN left) and ends at its FIN,
    in any namespace; the accepting side, which no dump saw, is dated by the same SYN."""
    need(os.geteuid() == 0, "needs root for packet sockets and sock_diag notifications")
    rec = Recorder(Store(tmp_path, host="lab"), tcp_poll_seconds=30, flush_seconds=3600)
    stop = threading.Event()
    runner = threading.Thread(target=rec.run, args=(stop,))
    runner.start()
    cmd = [sys.executable, "-c", PAIR]
    if where != "host":
        cmd = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', *cmd]
    child = subprocess.Popen(cmd, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().startswith("ready")
        if where != "host":
            ns = os.stat(f"/proc/{child.pid}/ns/net").st_ino
            deadline = time.monotonic() + 10
            while ns not in rec.kernel.edges.socks:
                assert time.monotonic() < deadline, f"namespace not joined: {rec.errors}"
                time.sleep(0.02)
        assert rec.watching.wait(10)
        t0 = time.time()
        assert child.stdin is not None
        child.stdin.write("connect\n")
        child.stdin.flush()
        cport, sport = map(int, child.stdout.readline().split()[1:])
        t1 = time.time()
        life = wait_life(rec, cport, sport, ended=False)
        assert life["pid"] == child.pid and str(life["process"]).startswith("python"), life
        assert t0 <= float(life["first_seen"]) <= t1  # type: ignore[arg-type]
        # Let the connection age, so its end cannot be mistaken for its start.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
        t2 = time.time()
        tell(child, "close", "closed")
        t3 = time.time()
        client = wait_life(rec, cport, sport, ended=True)
        server = wait_life(rec, sport, cport, ended=True)
    finally:
        stop.set()
        runner.join(timeout=30)
        child.kill()
        child.wait()
    assert t2 <= float(client["last_seen"]) <= t3  # type: ignore[arg-type]
    assert client["first_seen"] == life["first_seen"]
    assert abs(float(server["first_seen"]) - float(client["first_seen"])) < 0.05  # type: ignore[arg-type]
    assert t2 <= float(server["last_seen"]) <= t3 + 0.5  # type: ignore[arg-type]
    assert client["net_namespace"] == server["net_namespace"]
