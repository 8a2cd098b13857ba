"""DuckDB locked down: no extension from the network, nothing in anyone's home, and
--safe (flag or config key) for restricted sudo rules: SQL reaches netsql's tables only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need, netsql_cmd, run_netsql


def run_in(home: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache"), "SUDO_USER": ""}
    return run_netsql(*args, env=env, **kw)  # type: ignore[arg-type]


def one_line(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("netsql: error: "), r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_text('/etc/shadow')",
    "SELECT content FROM read_blob('/etc/passwd')",
    "COPY (SELECT 1) TO '{tmp}/out.csv'",
    "ATTACH '{tmp}/other.duckdb' AS other",
    "SELECT * FROM glob('/root/*')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SET enable_external_access = true",
    "LOAD httpfs",
])
def test_safe_refuses_files_from_sql(tmp_path: Path, sql: str) -> None:
    r = run_in(tmp_path, "--safe", "-e", sql.format(tmp=tmp_path))
    one_line(r, "refused in --safe mode")
    assert r.returncode == 1 and r.stdout == ""
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.duckdb").exists()


def test_without_safe_sql_reads_files(tmp_path: Path) -> None:
    (tmp_path / "note.txt").write_text("hello")
    r = run_in(tmp_path, "--format", "csv", "--no-header", "-e",
               f"SELECT content FROM read_text('{tmp_path}/note.txt')")
    assert (r.returncode, r.stdout) == (0, "hello\n"), r.stderr


def test_collectors_and_intel_work_in_safe_mode(tmp_path: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as held:  # a socket this process owns
        r = run_in(tmp_path, "--safe", "--format", "jsonl",
                   "-e", "SELECT count(*) > 0 AS v FROM processes JOIN sockets USING (pid) "
                   f"WHERE local_port = {held.getsockname()[1]}",
                   "-e", "SELECT count(*) AS v FROM routes WHERE false",
                   "-e", "SELECT count(*) AS v FROM intel", "-q", "listening")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["v"] for row in rows[:3]] == [True, 0, 0]


def test_safe_from_the_config_file_cannot_be_undone(tmp_path: Path) -> None:
    conf = tmp_path / ".config" / "netsql"
    conf.mkdir(parents=True)
    (conf / "config.toml").write_text("safe = true\n")
    r = run_in(tmp_path, "-e", "SELECT * FROM read_text('/etc/hostname')")
    one_line(r, "refused in --safe mode", "disabled by configuration")


@pytest.mark.parametrize("args,refused", [
    (["-f", "/etc/shadow"], "-f"), (["--pcap", "/etc/shadow", "-e", "SELECT 1"], "--pcap"),
    (["--intel-db", "/etc/x.duckdb", "-e", "SELECT 1"], "--intel-db"),
    (["-q", "/etc/shadow"], "-q PATH"), (["--queries", "/root", "-e", "SELECT 1"], "--queries"),
    (["--history", "/root", "-e", "SELECT 1"], "--history"),
    (["--pack", "/etc/shadow"], "--pack"),
])
def test_safe_reads_no_file_named_on_the_command_line(tmp_path: Path, args: list[str],
                                                      refused: str) -> None:
    r = run_in(tmp_path, "--safe", *args)
    one_line(r, refused)
    assert r.returncode == 2 and "root:" not in r.stderr


@pytest.mark.parametrize("command", [
    ".output {tmp}/out.txt", ".once {tmp}/out.txt", ".read /etc/passwd",
    ".pager touch {tmp}/out.txt", ".pager on", ".run /etc/passwd",
])
def test_safe_refuses_dot_commands_that_reach_files(tmp_path: Path, command: str) -> None:
    """Dot-commands run from standard input and -e (as sqlite3 does); under --safe none
    may read or write a file or run a command as root."""
    line = command.format(tmp=tmp_path)
    for r in (run_in(tmp_path, "--safe", input=f"{line}\nSELECT 1;\n"),
              run_in(tmp_path, "--safe", "-e", f"{line}\nSELECT 1;")):
        one_line(r, "--safe runs no dot-command", line)
        assert r.returncode == 2 and r.stdout == ""
    assert not (tmp_path / "out.txt").exists()


def test_safe_runs_harmless_dot_commands(tmp_path: Path) -> None:
    r = run_in(tmp_path, "--safe", "-e", ".mode csv\n.headers off\n.output stdout\nSELECT 42;")
    assert (r.returncode, r.stdout, r.stderr) == (0, "42\n", "")


def test_install_never_reaches_the_network_nor_home(tmp_path: Path) -> None:
    """strace shows every connect(); DuckDB must attempt none, and HOME gets no .duckdb."""
    need(shutil.which("strace") is not None, "strace (CI installs it)")
    trace = tmp_path / "trace"
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), NETSQL_SOCKET="")
    for sql in ("INSTALL httpfs", "INSTALL httpfs FROM 'http://192.0.2.1/'",
                "SELECT * FROM read_csv('https://192.0.2.1/x.csv')",
                "CREATE PERSISTENT SECRET s (TYPE http)"):
        r = subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(trace),
                            *netsql_cmd("-e", sql)], env=env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1, r.stderr
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        inet = [line for line in trace.read_text().splitlines()
                if "AF_INET" in line or "AF_INET6" in line]
        assert inet == [], inet
    assert sorted(p.name for p in home.iterdir()) == [], list(home.iterdir())
    r = subprocess.run(netsql_cmd("-e", "INSTALL httpfs"), env=env, capture_output=True,
                       text=True, timeout=60)
    assert "extensions are not installed" in r.stderr


def test_live_capture_works_in_safe_mode(tmp_path: Path) -> None:
    need(os.geteuid() == 0, "live capture needs root")
    r = run_in(tmp_path, "--safe", "--capture", "1", "--format", "jsonl",
               "-e", "SELECT count(*) >= 0 AS v FROM dns_queries",
               "-e", "SELECT count(*) >= 0 AS v FROM flows",
               "-e", "SELECT running AS v FROM capture_stats LIMIT 1")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["v"] for row in rows[:2]] == [True, True]
