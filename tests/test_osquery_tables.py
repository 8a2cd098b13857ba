"""osquery-shaped tables: declarations equal osquery's Linux specs, rows equal real state
(a probe process holding a TCP listener, a connected pair, a bound UDP socket, a unix
socket and an open file; temp hosts and resolv.conf files)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netsql.engine import Engine
from netsql.osquery.dialect import set_mode
from netsql.registry import osquery_tables
from tests.osquery_specs import DUCKDB, SPECS, WIDER

TABLES = {t.name: t for t in osquery_tables()}


def test_every_spec_has_a_table() -> None:
    assert sorted(TABLES) == sorted(SPECS)
    assert all(t.schema == "osquery" and t.key == f"osquery.{t.name}" for t in TABLES.values())


@pytest.mark.parametrize("name", sorted(SPECS))
def test_columns_and_types_equal_osquery_spec(name: str) -> None:
    t = TABLES[name]
    assert [(c.name, c.hidden) for c in t.columns] == [(n, h) for n, _, h in SPECS[name]]
    want = [WIDER.get((name, n), DUCKDB[ty]) for n, ty, _ in SPECS[name]]
    assert [c.type for c in t.columns] == want
    assert all(c.description.strip() for c in t.columns)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_duckdb_types_and_select_star(engine: Engine, name: str) -> None:
    engine.execute(f'SELECT 1 FROM osquery."{name}" LIMIT 0')
    types = engine.con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = 'osquery' "
        "AND table_name = ? ORDER BY column_index", [name]).fetchall()
    assert types == [(n, WIDER.get((name, n), DUCKDB[ty])) for n, ty, _ in SPECS[name]]
    star = engine.execute(f'SELECT * FROM osquery."{name}" LIMIT 1').data
    assert star is not None
    assert star.columns == [n for n, _, hidden in SPECS[name] if not hidden]


def test_hidden_columns_answer_when_named(engine: Engine, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("192.0.2.9 a.example\n")
    monkeypatch.setenv("NETSQL_ETC_HOSTS", str(hosts))
    data = engine.execute("SELECT h.*, pid_with_namespace FROM osquery.etc_hosts h").data
    assert data is not None
    assert data.columns == ["address", "hostnames", "pid_with_namespace"]
    assert data.rows == [("192.0.2.9", "a.example", 0)]


def test_netsql_tables_keep_their_columns(engine: Engine) -> None:
    data = engine.execute("SELECT * FROM processes LIMIT 1").data
    assert data is not None and "ppid" in data.columns and "parent" not in data.columns
    e = Engine()
    set_mode(e, True)
    own = e.execute("SELECT * FROM main.processes LIMIT 1").data
    theirs = e.execute("SELECT * FROM processes LIMIT 1").data
    assert own is not None and theirs is not None
    assert own.columns == data.columns
    assert theirs.columns[:3] == ["pid", "name", "path"] and "on_disk" in theirs.columns


# -- a probe process --------------------------------------------------------------------

PROBE = r"""
import json, os, socket, sys
tmp = sys.argv[1]
os.chdir(tmp)
lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen()
cli = socket.create_connection(lst.getsockname()); srv, _ = lst.accept()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("127.0.0.1", 0))
uds = socket.socket(socket.AF_UNIX); uds.bind(os.path.join(tmp, "probe.sock")); uds.listen()
f = open(os.path.join(tmp, "open-file.txt"), "w")
socks = {"listener": lst, "client": cli, "server": srv, "udp": udp, "unix": uds}
info = {k: {"fd": s.fileno(), "inode": os.fstat(s.fileno()).st_ino,
            "port": s.getsockname()[1] if k != "unix" else 0} for k, s in socks.items()}
info["file"] = {"fd": f.fileno(), "path": f.name}
print(json.dumps(info), flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("probe")
    proc = subprocess.Popen([sys.executable, "-c", PROBE, str(tmp)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    info["pid"], info["tmp"] = proc.pid, str(tmp)
    try:
        yield info
    finally:
        proc.kill()
        proc.wait()


def rows(engine: Engine, sql: str) -> list[dict[str, Any]]:
    data = engine.execute(sql).data
    assert data is not None
    return [dict(zip(data.columns, r, strict=True)) for r in data.rows]


def test_process_open_sockets_of_the_probe(engine: Engine, probe: dict[str, Any]) -> None:
    pid = probe["pid"]
    got = {r["socket"]: r for r in rows(
        engine, f"SELECT * FROM osquery.process_open_sockets WHERE pid = {pid}")}
    ns = str(os.stat(f"/proc/{pid}/ns/net").st_ino)
    lport = probe["listener"]["port"]

    def sock(kind: str) -> dict[str, Any]:
        r = got[probe[kind]["inode"]]
        assert (r["pid"], r["fd"], r["net_namespace"]) == (pid, probe[kind]["fd"], ns)
        return r

    r = sock("listener")
    assert (r["family"], r["protocol"], r["local_address"], r["local_port"],
            r["remote_address"], r["remote_port"], r["state"], r["path"]) == \
        (2, 6, "127.0.0.1", lport, "0.0.0.0", 0, "LISTEN", "")
    r = sock("client")
    assert (r["local_port"], r["remote_address"], r["remote_port"], r["state"]) == \
        (probe["client"]["port"], "127.0.0.1", lport, "ESTABLISHED")
    r = sock("server")
    assert (r["local_port"], r["remote_port"], r["state"]) == \
        (lport, probe["client"]["port"], "ESTABLISHED")
    r = sock("udp")
    assert (r["family"], r["protocol"], r["local_port"], r["remote_port"], r["state"]) == \
        (2, 17, probe["udp"]["port"], 0, "")
    r = sock("unix")
    assert (r["family"], r["protocol"], r["path"], r["local_address"]) == \
        (1, 0, os.path.join(probe["tmp"], "probe.sock"), "")
    assert len(got) == 5  # the file is not a socket


def test_listening_ports_is_osquerys_definition(engine: Engine,
                                                probe: dict[str, Any]) -> None:
    pid = probe["pid"]
    got = {(r["protocol"], r["port"], r["address"], r["path"], r["socket"]) for r in rows(
        engine, f"SELECT * FROM osquery.listening_ports WHERE pid = {pid}")}
    assert got == {
        (6, probe["listener"]["port"], "127.0.0.1", None, probe["listener"]["inode"]),
        (17, probe["udp"]["port"], "127.0.0.1", None, probe["udp"]["inode"]),
        (0, 0, None, os.path.join(probe["tmp"], "probe.sock"), probe["unix"]["inode"])}


def test_process_open_files_of_the_probe(engine: Engine, probe: dict[str, Any]) -> None:
    got = rows(engine, "SELECT fd, path FROM osquery.process_open_files "
                       f"WHERE pid = {probe['pid']}")
    assert {"fd": probe["file"]["fd"], "path": probe["file"]["path"]} in got
    assert not [r for r in got if r["path"].startswith(("socket:", "pipe:", "anon_inode:"))]
    fds = {int(n) for n in os.listdir(f"/proc/{probe['pid']}/fd")}
    sockets = {probe[k]["fd"] for k in ("listener", "client", "server", "udp", "unix")}
    assert {r["fd"] for r in got} <= fds - sockets


def test_processes_row_of_the_probe(engine: Engine, probe: dict[str, Any]) -> None:
    (r,) = rows(engine, f"SELECT * FROM osquery.processes WHERE pid = {probe['pid']}")
    with open(f"/proc/{probe['pid']}/status") as f:
        status = dict(line.split(":\t", 1) for line in f.read().splitlines())
    assert r["parent"] == os.getpid()
    assert r["pgroup"] == os.getpgid(probe["pid"])
    assert r["name"] == status["Name"].strip()
    assert r["path"] == os.path.realpath(sys.executable) and r["on_disk"] == 1
    assert r["cwd"] == probe["tmp"] and r["root"] == "/"
    assert r["cmdline"].startswith(sys.executable + " -c")
    assert (r["uid"], r["euid"], r["suid"]) == (os.getuid(), os.geteuid(), os.geteuid())
    assert (r["gid"], r["egid"]) == (os.getgid(), os.getegid())
    assert r["state"] in ("S", "R") and r["threads"] >= 1 and r["nice"] == os.nice(0)
    assert r["resident_size"] == int(status["VmRSS"].split()[0]) * 1024 or \
        r["resident_size"] > 0
    assert abs(r["start_time"] - time.time()) < 600
    assert r["user_time"] >= 0 and r["wired_size"] == 0
    assert r["cgroup_path"] == open(f"/proc/{probe['pid']}/cgroup").read() \
        .split("\n")[0].split(":", 2)[2]


def test_unowned_socket_has_pid_minus_one(engine: Engine) -> None:
    """A TIME_WAIT socket belongs to no process: pid and fd -1, as in osquery."""
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen()
        cli = socket.create_connection(lst.getsockname())
        port, lport = cli.getsockname()[1], lst.getsockname()[1]
        srv, _ = lst.accept()
        cli.close()  # the side that closes first waits in TIME_WAIT
        srv.close()
    deadline = time.monotonic() + 10
    while True:
        got = rows(engine, "SELECT pid, fd, state FROM osquery.process_open_sockets "
                           f"WHERE local_port = {port} AND remote_port = {lport} "
                           "AND family = 2")
        if got and got[0]["state"] == "TIME_WAIT" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert got == [{"pid": -1, "fd": -1, "state": "TIME_WAIT"}]
    assert rows(engine, "SELECT state FROM osquery.process_open_sockets WHERE pid = -1 "
                        f"AND local_port = {port} AND remote_port = {lport}") == [
        {"state": "TIME_WAIT"}]


def test_etc_hosts_reads_the_file_named(engine: Engine, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# comment\n127.0.0.1\tlocalhost\n\n192.0.2.5  a.example b  # why\n"
                     "::1 ip6-localhost\n10.0.0.1\n")
    monkeypatch.setenv("NETSQL_ETC_HOSTS", str(hosts))
    assert [tuple(r.values()) for r in rows(engine, "SELECT * FROM osquery.etc_hosts")] == [
        ("127.0.0.1", "localhost"), ("192.0.2.5", "a.example b"),
        ("::1", "ip6-localhost"), ("10.0.0.1", None)]
    monkeypatch.setenv("NETSQL_ETC_HOSTS", str(tmp_path / "missing"))
    result = engine.execute("SELECT * FROM osquery.etc_hosts")
    assert result.data is not None and result.data.rows == []
    assert any("cannot read" in w for w in result.warnings)


def test_dns_resolvers_include_ipv6(engine: Engine, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("; comment\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n"
                    "nameserver fe80::1%eth0\nnameserver 192.0.2.99\n"
                    "domain old.example\nsearch a.example b.example\n"
                    "sortlist 10.0.0.0/255.0.0.0\noptions rotate edns0\n")
    monkeypatch.setenv("NETSQL_RESOLV_CONF", str(conf))
    got = [tuple(r.values()) for r in rows(
        engine, "SELECT * FROM osquery.dns_resolvers ORDER BY type, id")]
    opts = 0x2C1 | 0x4000 | 0x100000
    assert got == [
        (0, "nameserver", "192.0.2.53", "32", opts),
        (1, "nameserver", "2001:db8::53", "128", opts),  # osquery returns '' here
        (2, "nameserver", "fe80::1", "128", opts),  # at most three, as glibc
        (0, "search", "a.example", None, opts),
        (1, "search", "b.example", None, opts),
        (0, "sortlist", "10.0.0.0", "255.0.0.0", opts)]


def test_users_and_groups_match_the_files(engine: Engine) -> None:
    import grp
    import pwd

    me = pwd.getpwuid(os.getuid())
    (r,) = rows(engine, f"SELECT * FROM osquery.users WHERE uid = {me.pw_uid}")
    assert (r["username"], r["gid"], r["directory"], r["shell"]) == \
        (me.pw_name, me.pw_gid, me.pw_dir, me.pw_shell)
    g = grp.getgrgid(os.getgid())
    assert rows(engine, f"SELECT groupname FROM osquery.groups WHERE gid = {g.gr_gid}") \
        == [{"groupname": g.gr_name}]


def test_time_system_info_osquery_info(engine: Engine) -> None:
    (t,) = rows(engine, "SELECT * FROM osquery.time")
    assert abs(t["unix_time"] - time.time()) < 60 and t["timezone"] == "UTC"
    assert t["datetime"].endswith("Z") and len(t["datetime"]) == 20
    (s,) = rows(engine, "SELECT * FROM osquery.system_info")
    assert s["hostname"] == socket.gethostname() and s["cpu_logical_cores"] == os.cpu_count()
    assert s["physical_memory"] == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    (i,) = rows(engine, "SELECT * FROM osquery.osquery_info")
    from netsql import __version__

    assert (i["pid"], i["version"], i["uuid"]) == (os.getpid(), __version__, s["uuid"])
    assert i == rows(engine, "SELECT * FROM osquery.osquery_info")[0]  # one instance_id


def test_interface_details_counters_are_64_bit(engine: Engine) -> None:
    (lo,) = rows(engine, "SELECT * FROM osquery.interface_details WHERE interface = 'lo'")
    with open("/sys/class/net/lo/statistics/rx_bytes") as f:
        before = int(f.read())
    assert lo["type"] == 772 and lo["flags"] & 0x8 and lo["flags"] & 0x1
    assert lo["ibytes"] >= before - 1_000_000 and lo["last_change"] == -1


def test_non_ascii_text_before_a_table_name(engine: Engine) -> None:
    """DuckDB's tokenizer counts bytes: a statement with 'é' before the table name still
    declares the table (netsql's own and osquery's) and hides hidden columns."""
    data = engine.execute("SELECT 'ééé' AS x, pid FROM processes WHERE pid = 1").data
    assert data is not None and data.rows == [("ééé", 1)]
    data = engine.execute("SELECT 'éé' AS x, * FROM osquery.groups WHERE gid = 0").data
    assert data is not None and data.columns == ["x", "gid", "gid_signed", "groupname"]
