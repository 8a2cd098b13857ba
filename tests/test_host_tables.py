"""processes, sockets and listening_ports against real sockets and child processes."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from netsql.engine import Engine
from tests.conftest import need, run_netsql


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


def query(engine: Engine, sql: str) -> list[dict[str, Any]]:
    (result,) = list(engine.run(sql))
    assert result.data is not None
    return [dict(zip(result.data.columns, r, strict=True)) for r in result.data.rows]


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket, socket.socket]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    yield listener, client, server
    for s in (client, server, listener):
        s.close()


def test_own_sockets_with_pid_and_fd(engine: Engine, tcp_pair: Any) -> None:
    listener, client, server = tcp_pair
    lport = listener.getsockname()[1]
    cport = client.getsockname()[1]
    got = query(engine, f"SELECT * FROM sockets WHERE pid = {os.getpid()} "
                        f"AND (local_port = {lport} OR remote_port = {lport}) ORDER BY fd")
    by_fd = {r["fd"]: r for r in got}
    assert set(by_fd) == {listener.fileno(), client.fileno(), server.fileno()}
    lrow = by_fd[listener.fileno()]
    assert (lrow["state"], lrow["remote_address"], lrow["remote_port"]) == ("LISTEN", None, None)
    crow = by_fd[client.fileno()]
    assert crow["state"] == "ESTABLISHED"
    assert (crow["local_port"], crow["remote_address"], crow["remote_port"]) == (
        cport, "127.0.0.1", lport)
    srow = by_fd[server.fileno()]
    assert (srow["local_port"], srow["remote_port"]) == (lport, cport)
    for r in got:
        assert (r["family"], r["protocol"], r["uid"]) == ("ipv4", "tcp", os.getuid())
        assert r["inode"] == os.fstat([s for s in tcp_pair if s.fileno() == r["fd"]][0].fileno()
                                      ).st_ino
        assert r["owners"] == [os.getpid()]


def test_udp_unconnected_has_null_state_and_remote(engine: Engine) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        u.bind(("::1", 0))
        c.connect(("127.0.0.1", 9))
        (row,) = query(engine, f"SELECT * FROM sockets WHERE pid = {os.getpid()} "
                               f"AND fd = {u.fileno()}")
        assert (row["family"], row["protocol"], row["local_address"]) == ("ipv6", "udp", "::1")
        assert (row["state"], row["remote_address"], row["remote_port"]) == (None, None, None)
        (crow,) = query(engine, f"SELECT state, remote_port FROM sockets "
                                f"WHERE pid = {os.getpid()} AND fd = {c.fileno()}")
        assert crow == {"state": "ESTABLISHED", "remote_port": 9}
        ports = query(engine, f"SELECT protocol, address, port FROM listening_ports "
                              f"WHERE pid = {os.getpid()}")
        assert {"protocol": "udp", "address": "::1", "port": u.getsockname()[1]} in ports


def test_sockets_agree_with_ss(engine: Engine, tcp_pair: Any) -> None:
    """Every established TCP socket ss sees (in this namespace), we see with the same inode."""
    need(shutil.which("ss") is not None, "needs ss (iproute2)")
    out = subprocess.run(["ss", "-tnaeH", "state", "established"], capture_output=True,
                         text=True, check=True).stdout
    theirs = set()
    for line in out.splitlines():
        f = line.split()
        inode = next(int(x[4:]) for x in f if x.startswith("ino:"))
        theirs.add((f[2].rsplit(":", 1)[1], f[3].rsplit(":", 1)[1], inode))
    ours = {(str(r["local_port"]), str(r["remote_port"]), r["inode"]) for r in query(
        engine, "SELECT local_port, remote_port, inode FROM sockets WHERE protocol = 'tcp' "
                "AND state = 'ESTABLISHED' AND net_namespace = (SELECT net_namespace FROM "
                f"processes WHERE pid = {os.getpid()})")}
    assert theirs
    assert theirs <= ours


def test_child_process_row(engine: Engine) -> None:
    code = "import time; print('up', flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code, "arg two"], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "up\n"
        (row,) = query(engine, f"SELECT * FROM processes WHERE pid = {child.pid}")
        assert row["ppid"] == os.getpid()
        assert row["cmdline"] == f"{sys.executable} -c {code} arg two"
        assert row["path"] == os.path.realpath(sys.executable)
        assert row["uid"] == os.getuid()
        assert row["state"] in ("sleeping", "running", "disk-sleep")
        assert row["cwd"] == os.getcwd()
        assert row["rss"] > 1_000_000 and row["threads"] >= 1
        started = row["start_time"].replace(tzinfo=datetime.UTC).timestamp()
        assert abs(started - time.time()) < 60
        everyone = query(engine, "SELECT pid, ppid FROM processes")
        assert {"pid": child.pid, "ppid": os.getpid()} in everyone
        assert len(everyone) == len({r["pid"] for r in everyone})
    finally:
        child.kill()
        child.wait()


def test_text_that_is_not_utf8_is_shown_escaped(tmp_path: Any) -> None:
    """A working directory and an argument that are not UTF-8 (any bytes are a valid
    Linux path): the row shows the byte as \\xff, one-shot and in csv, never a failed
    load or a traceback."""
    where = os.path.join(os.fsencode(tmp_path), b"bad\xffdir")
    os.mkdir(where)
    code = "import time; print('up', flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable.encode(), b"-c", code.encode(), b"arg\xfe"],
                             cwd=where, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "up\n"
        for sql in (f"SELECT cwd, cmdline FROM processes WHERE pid = {child.pid}",
                    f"SELECT * FROM processes WHERE pid = {child.pid}"):
            out = run_netsql("--csv", "-e", sql)
            assert out.returncode == 0, out.stderr
            assert "Traceback" not in out.stderr
            assert f"{tmp_path}/bad\\xffdir" in out.stdout
            assert f" -c {code} arg\\xfe" in out.stdout
    finally:
        child.kill()
        child.wait()


def test_join_sockets_to_processes(engine: Engine, tcp_pair: Any) -> None:
    listener = tcp_pair[0]
    got = query(engine, "SELECT p.pid, p.name, s.local_port FROM sockets s JOIN processes p "
                        f"USING (pid) WHERE s.local_port = {listener.getsockname()[1]} "
                        "AND s.state = 'LISTEN'")
    assert got == [{"pid": os.getpid(), "name": query(
        engine, f"SELECT name FROM processes WHERE pid = {os.getpid()}")[0]["name"],
        "local_port": listener.getsockname()[1]}]


def test_other_namespace_sockets_are_seen(netns: str) -> None:
    """A listener inside another network namespace shows with that namespace's inode."""
    code = ("import socket,time; s=socket.socket(); s.bind(('127.0.0.1', 4242)); s.listen();"
            "print('up', flush=True); time.sleep(60)")
    child = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", code],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "up"
        ns_inode = os.stat(f"/run/netns/{netns}").st_ino
        out = run_netsql("--json", "-e", "SELECT pid, local_port, state, net_namespace "
                         f"FROM sockets WHERE net_namespace = {ns_inode}")
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
        assert [(r["local_port"], r["state"]) for r in rows] == [(4242, "LISTEN")]
        assert rows[0]["pid"] is not None
    finally:
        child.kill()
        child.wait()


def test_without_root_rows_stay_with_null_pid_and_one_warning(tcp_pair: Any) -> None:
    need(os.geteuid() == 0 and shutil.which("setpriv") is not None,
         "needs root (to drop to another user) and setpriv")
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "netsql", "--json", "-e",
         "SELECT count(*) AS n, count(pid) AS with_pid FROM sockets WHERE inode <> 0"],
        capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["n"] >= 3 and row["with_pid"] < row["n"]
    warnings = out.stderr.strip().splitlines()
    assert len(warnings) == 1
    assert f"{row['n'] - row['with_pid']} sockets have no pid" in warnings[0]
    assert "root" in warnings[0]
    assert "Traceback" not in out.stderr
