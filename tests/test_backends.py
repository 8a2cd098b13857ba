"""The backends: how one is chosen, and the psutil backend against the native one on the
same live state (a differential test in namespaces of its own)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from netsql.backends import BackendError, chosen
from netsql.backends.base import LINUX_LINK_FLAGS
from netsql.backends.psutil_backend import LINUX_ONLY, UNFILLED
from netsql.engine import Engine
from netsql.registry import default_tables
from tests.conftest import need, run_netsql

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors",
            "rx_dropped", "tx_dropped")
#: What a running process changes between two reads (compared for idle probes only).
MOVING = ("rss", "state", "threads")


def test_choice_follows_platform_and_variable() -> None:
    assert chosen({}, "linux") == "native"
    assert chosen({}, "darwin") == "psutil"
    assert chosen({}, "freebsd14") == "psutil"
    assert chosen({"NETSQL_BACKEND": "psutil"}, "linux") == "psutil"
    assert chosen({"NETSQL_BACKEND": ""}, "darwin") == "psutil"
    assert chosen({"NETSQL_BACKEND": "native"}, "linux") == "native"
    with pytest.raises(BackendError, match="is not a backend"):
        chosen({"NETSQL_BACKEND": "procfs"}, "linux")
    with pytest.raises(BackendError, match="darwin does not have"):
        chosen({"NETSQL_BACKEND": "native"}, "darwin")


@pytest.mark.parametrize("value", ["bogus", "native\x1b[31m"])
def test_unknown_backend_is_one_line_and_exit_2(value: str) -> None:
    out = run_netsql("-e", "SELECT count(*) FROM processes", env={"NETSQL_BACKEND": value})
    assert out.returncode == 2
    assert out.stdout == ""
    (line,) = out.stderr.splitlines()
    assert line.startswith("netsql: error: NETSQL_BACKEND=") and "psutil" in line
    assert "\x1b" not in line and "Traceback" not in out.stderr


def test_linux_only_columns_say_so_and_stay_null() -> None:
    tables = {t.name: t for t in default_tables()}
    for name, empty in UNFILLED.items():
        for col in tables[name].columns:
            assert (LINUX_ONLY in col.description) == (col.name in empty), (name, col.name)
    engine = Engine()
    os.environ["NETSQL_BACKEND"] = "psutil"
    try:
        for name, empty in UNFILLED.items():
            counts = ", ".join(f'count("{c}")' for c in sorted(empty))
            (result,) = list(engine.run(f"SELECT count(*), {counts} FROM {name}"))
            assert result.data is not None
            total, *filled = result.data.rows[0]
            assert total > 0 or name == "listening_ports", name
            assert filled == [0] * len(empty), name
    finally:
        del os.environ["NETSQL_BACKEND"]


def test_psutil_sees_own_sockets_and_process() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port, fd = s.getsockname()[1], s.fileno()
        out = run_netsql("--json", "-e", "SELECT l.pid, l.fd, p.name, l.address, l.port "
                         "FROM listening_ports l JOIN processes p USING (pid) "
                         f"WHERE l.port = {port}", env={"NETSQL_BACKEND": "psutil"})
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
    assert len(rows) == 1
    assert (rows[0]["pid"], rows[0]["fd"], rows[0]["address"]) == (
        os.getpid(), fd, "127.0.0.1")


def _namespace_state(netns: str) -> dict[str, Any]:
    """Both backends' rows, read in ``netns`` and a pid namespace of their own."""
    for cmd in (["link", "add", "va", "type", "veth", "peer", "name", "vb"],
                ["addr", "add", "10.9.0.1/24", "dev", "va"],
                ["link", "set", "va", "up"],
                ["link", "add", "vc", "mtu", "1400", "type", "veth", "peer", "name", "vd"],
                ["addr", "add", "2001:db8::1/64", "dev", "vc", "nodad"],
                ["addr", "add", "10.8.0.1/16", "dev", "vc"],
                ["link", "set", "vc", "up"], ["link", "set", "vd", "up"]):
        subprocess.run(["ip", "-n", netns, *cmd], check=True)
    out = subprocess.run(["ip", "netns", "exec", netns, "unshare", "--pid", "--fork",
                          "--mount-proc", sys.executable, str(ROOT / "tests" / "backend_diff.py")],
                         capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def _key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True)


def test_psutil_rows_equal_native_rows(netns: str) -> None:
    """Every column both backends fill holds the same values in the same rows."""
    need(shutil.which("unshare") is not None, "needs unshare (util-linux)")
    state = _namespace_state(netns)
    native, theirs, again = (state["tables"][k] for k in ("native", "psutil",
                                                           "native_again"))
    # The native backend reads every namespace (others' test namespaces under
    # /run/netns too); psutil the one it runs in.
    for run in (native, again):
        for table in ("sockets", "listening_ports", "interfaces"):
            run[table] = [r for r in run[table]
                          if r["net_namespace"] == state["net_namespace"]]
    # The state is what the probes made (so the comparison below is not of two empties).
    procs = native["processes"]
    pids = {p["pid"] for p in procs}
    assert len(pids) == 5 and {state["driver"], *state["probes"]} <= pids  # + a fork
    assert any(p["uid"] == 65534 and p["username"] for p in procs)
    socks = native["sockets"]
    assert {(s["family"], s["protocol"]) for s in socks} == {
        ("ipv4", "tcp"), ("ipv6", "tcp"), ("ipv4", "udp"), ("ipv6", "udp")}
    assert any(s["state"] == "FIN_WAIT2" and s["pid"] is None for s in socks)
    assert any(s["owners"] and len(s["owners"]) == 2 for s in socks)
    assert any(s["protocol"] == "udp" and s["state"] == "ESTABLISHED" for s in socks)
    assert {i["name"] for i in native["interfaces"]} == {"lo", "va", "vb", "vc", "vd"}
    assert native["listening_ports"]

    for table in ("processes", "sockets", "listening_ports", "interfaces"):
        both = [c for c in native[table][0] if c not in UNFILLED[table]]
        mine, later, psu = ([{c: r[c] for c in both} for r in rows]
                            for rows in (native[table], again[table], theirs[table]))
        if table == "processes":  # the driver itself runs while it reads
            for rows in (mine, psu, later):
                for r in rows:
                    if r["pid"] == state["driver"]:
                        for c in MOVING:
                            r[c] = None
        if table in ("sockets", "listening_ports"):
            _shared_holders(mine, psu)
        if table == "interfaces":
            for n, p, n2 in zip(sorted(mine, key=lambda r: r["index"]),
                                sorted(psu, key=lambda r: r["index"]),
                                sorted(later, key=lambda r: r["index"]), strict=True):
                n["flags"] = [f for f in n["flags"] if f not in LINUX_LINK_FLAGS]
                for c in COUNTERS:  # traffic (IPv6 neighbour discovery) may move them
                    assert n[c] <= p[c] <= n2[c], (n["name"], c, n[c], p[c], n2[c])
                    n[c] = p[c]
        assert sorted(map(_key, psu)) == sorted(map(_key, mine)), (table, _diff(mine, psu))


def _shared_holders(mine: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    """psutil on Linux names one holder of a socket several processes share (its pick,
    documented in the owners column): check it is one of them, then blank the holder
    columns of those rows on both sides."""
    shared: dict[str, list[int]] = {}
    for r in mine:
        if r["owners"] and len(r["owners"]) > 1:
            rest = {k: v for k, v in r.items() if k not in ("pid", "fd", "owners")}
            shared[_key(rest)] = r["owners"]
            r.update(pid=None, fd=None, owners=None)
    assert shared, "no socket the probes share"
    for r in theirs:
        rest = {k: v for k, v in r.items() if k not in ("pid", "fd", "owners")}
        owners = shared.get(_key(rest))
        if owners is not None:
            assert r["pid"] in owners and set(r["owners"]) <= set(owners), (r, owners)
            r.update(pid=None, fd=None, owners=None)


def _diff(mine: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[Any]:
    """The rows only one side has, as (side, row) pairs with the columns that differ
    from the other side's nearest row (for the assertion message)."""
    a, b = set(map(_key, mine)), set(map(_key, theirs))
    out: list[Any] = []
    for side, only, other in (("native", a - b, b - a), ("psutil", b - a, a - b)):
        for row in map(json.loads, sorted(only)):
            near = max(map(json.loads, other), default={},
                       key=lambda o: sum(o.get(k) == v for k, v in row.items()))
            out.append((side, {k: v for k, v in row.items() if near.get(k) != v}))
    return out


def test_resident_netsql_follows_the_clients_backend(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_serve import start, stop

    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    server = start(str(run_dir / "netsql.sock"), tmp_path / "serve.log", "--no-capture")
    try:
        sql = "SELECT count(*) AS n, count(inode) AS inodes FROM sockets"
        monkeypatch.delenv("NETSQL_BACKEND", raising=False)
        native = server.run("--json", "-e", sql)
        monkeypatch.setenv("NETSQL_BACKEND", "psutil")
        theirs = server.run("--json", "-e", sql)
    finally:
        stop(server)
    assert native.returncode == theirs.returncode == 0, (native.stderr, theirs.stderr)
    assert len(server.served()) == 2
    (n,), (p,) = json.loads(native.stdout), json.loads(theirs.stdout)
    assert n["inodes"] > 0 and p["n"] > 0 and p["inodes"] == 0


def test_platforms_doc_lists_what_psutil_leaves_null() -> None:
    import re

    text = (ROOT / "docs" / "platforms.md").read_text(encoding="utf-8")
    section = text.split("## What the psutil backend leaves NULL", 1)[1].split("\n\nWhere", 1)[0]
    listed = {m.group(1): set(re.findall(r"`(\w+)`", m.group(2))) for m in re.finditer(
        r"^- `(\w+)`: ((?:.|\n  )*)", section, re.M)}
    assert listed == {k: set(v) for k, v in UNFILLED.items()}


def test_recording_serve_with_psutil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a recorder, sockets.first_seen comes natively and is NULL (not an error)
    with psutil, which has no inodes; the recorder itself reads processes natively
    whatever NETSQL_BACKEND says (its lives keep their namespace)."""
    import socket

    from netsql.collect import State
    from netsql.history.recorder import Recorder
    from netsql.history.store import Store
    from netsql.procfs import own_netns

    need(os.geteuid() == 0, "needs root to name the sockets of every process")
    monkeypatch.setenv("NETSQL_BACKEND", "psutil")
    rec = Recorder(Store(tmp_path, host="lab"))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()) as client:
            server, _ = listener.accept()
            with server:
                rec.poll()
                me = rec.procs[rec.live_pids[os.getpid()]].values
                assert me["net_namespace"] == own_netns() is not None
                port = client.getsockname()[1]
                sql = (f"SELECT count(*) AS n, count(first_seen) AS seen FROM sockets "
                       f"WHERE local_port = {port}")
                got = {}
                for backend in ("native", "psutil"):
                    monkeypatch.setenv("NETSQL_BACKEND", backend)
                    (result,) = list(Engine(state=State(recorder=rec)).run(sql))
                    assert result.data is not None
                    got[backend] = result.data.rows[0]
    assert got == {"native": (1, 1), "psutil": (1, 0)}
