"""The one-liner CLI as a subprocess: formats, exit statuses, stdout/stderr discipline."""

from __future__ import annotations

import csv
import io
import json
import os
import socket

import pytest

from netsql.context import ExitStatus
from tests.conftest import run_netsql

SQL = ("SELECT 1 AS n, 'a,b \"q\"' AS s, NULL AS nothing, [1, 2] AS l, "
       "TIMESTAMP '2026-01-02 03:04:05' AS ts, 2.5 AS x, true AS b")


def test_exit_status_values_are_documented() -> None:
    assert [(s.name, int(s)) for s in ExitStatus] == [
        ("SUCCESS", 0), ("ERROR", 1), ("USAGE", 2), ("INTERRUPTED", 130)]
    readme = open(os.path.join(os.path.dirname(__file__), "..", "docs", "cli.md")).read()
    for s in ExitStatus:
        assert f"| {int(s)} |" in readme


def test_json_native_types() -> None:
    out = run_netsql("--format", "json", "-e", SQL)
    assert out.returncode == 0 and out.stderr == ""
    assert json.loads(out.stdout) == [{"n": 1, "s": 'a,b "q"', "nothing": None, "l": [1, 2],
                                       "ts": "2026-01-02T03:04:05", "x": 2.5, "b": True}]
    assert list(json.loads(out.stdout)[0]) == ["n", "s", "nothing", "l", "ts", "x", "b"]


def test_json_shortcut_and_jsonl() -> None:
    assert json.loads(run_netsql("--json", "-e", "SELECT 1 AS a").stdout) == [{"a": 1}]
    out = run_netsql("--format", "jsonl", "-e", "SELECT * FROM range(3) t(i)")
    assert [json.loads(line) for line in out.stdout.splitlines()] == [
        {"i": 0}, {"i": 1}, {"i": 2}]


def test_csv_rfc4180() -> None:
    for args in (("--csv",), ("--format", "csv")):
        out = run_netsql(*args, "-e", SQL)
        assert out.returncode == 0
        rows = list(csv.reader(io.StringIO(out.stdout, newline="")))
        assert rows[0] == ["n", "s", "nothing", "l", "ts", "x", "b"]
        assert rows[1][:3] == ["1", 'a,b "q"', ""]


@pytest.mark.parametrize("fmt", ["table", "line", "markdown"])
def test_human_formats_escape_control_characters(fmt: str) -> None:
    out = run_netsql("--format", fmt, "-e", "SELECT chr(27) || '[31mred' AS evil, 42 AS n")
    assert out.returncode == 0
    assert "\x1b" not in out.stdout
    assert "\\x1b[31mred" in out.stdout and "42" in out.stdout


def test_statements_run_in_order_across_e_and_f(tmp_path: os.PathLike[str]) -> None:
    f = os.path.join(tmp_path, "q.sql")
    with open(f, "w") as fh:
        fh.write("INSERT INTO t VALUES (2);\nINSERT INTO t VALUES (3);\n")
    out = run_netsql("-e", "CREATE TABLE t(i INT); INSERT INTO t VALUES (1)", "-f", f,
                     "-e", "SELECT list(i ORDER BY i) AS l FROM t", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"l": [1, 2, 3]}]


def test_sql_from_stdin() -> None:
    out = run_netsql("--json", input="SELECT 40 + 2 AS answer;")
    assert json.loads(out.stdout) == [{"answer": 42}]


def test_bad_statement_one_line_exit_1() -> None:
    out = run_netsql("-e", "SELEC 1")
    assert out.returncode == ExitStatus.ERROR
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and "syntax error" in lines[0] and "line 1" in lines[0]


def test_unknown_table_suggests() -> None:
    out = run_netsql("-e", "SELECT * FROM proceses")
    assert out.returncode == ExitStatus.ERROR
    assert out.stderr.strip() == (
        "netsql: error: no such table: proceses (did you mean processes?) (line 1, column 15)")


def test_usage_errors_exit_2() -> None:
    for args in (["--format", "yaml", "-e", "SELECT 1"], ["--bogus"],
                 ["-f", "/nonexistent/file.sql"], ["-e"]):
        out = run_netsql(*args)
        assert out.returncode == ExitStatus.USAGE, args
        assert len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr


def test_error_stops_later_statements() -> None:
    out = run_netsql("--csv", "-e", "SELECT 1 AS a; SELECT nope; SELECT 3 AS c")
    assert out.returncode == ExitStatus.ERROR
    assert out.stdout.splitlines() == ["a", "1"]


def test_list_tables_json_schema() -> None:
    out = run_netsql("--list-tables", "--format", "json")
    schema = {t["name"]: t for t in json.loads(out.stdout)}
    assert {"processes", "sockets", "listening_ports"} <= set(schema)
    cols = {c["name"]: c for c in schema["sockets"]["columns"]}
    assert cols["remote_port"]["type"] == "INTEGER" and cols["remote_port"]["description"]
    text = run_netsql("--list-tables").stdout
    assert "sockets" in text and "processes" in text


def test_join_one_liner_finds_own_listener() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run_netsql("--json", "-e", "SELECT p.pid, p.cmdline, s.local_port FROM sockets s "
                         f"JOIN processes p USING (pid) WHERE s.local_port = {port}")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"pid": os.getpid(), "cmdline": open(
        "/proc/self/cmdline").read().rstrip("\0").replace("\0", " "), "local_port": port}]


def test_broken_pipe_is_quiet() -> None:
    import subprocess
    import sys

    p = subprocess.run(f"{sys.executable} -m netsql --csv -e 'SELECT * FROM range(200000)' "
                       "| head -1", shell=True, capture_output=True, text=True)
    assert p.stdout == "range\n"
    assert "Traceback" not in p.stderr
