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
    # Several statements: one csv table with a statement column (docs/cli.md).
    assert out.stdout.splitlines() == ["statement,a", "1,1"]
    out = run_netsql("--format", "table", "-e", "SELECT 1 AS a; SELECT nope; SELECT 3 AS c")
    assert out.returncode == ExitStatus.ERROR and "│ a │" in out.stdout
    assert "│ c │" not in out.stdout


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
                         f"JOIN processes p USING (pid) WHERE s.local_port = {port} "
                         # (on a busy host a connection elsewhere may use the same port)
                         "AND s.state = 'LISTEN' AND s.local_address = '127.0.0.1'")
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


def test_dns_derived_columns_without_a_dns_source_say_so_once(tmp_path: os.PathLike[str]
                                                                ) -> None:
    note = "remote_host is NULL for every row: no DNS source is active"
    out = run_netsql("--csv", "-e", "SELECT remote_host FROM sockets LIMIT 1; "
                     "SELECT remote_host FROM flows LIMIT 1; SELECT 1")
    assert out.returncode == 0, out.stderr
    assert out.stderr.count(note) == 1, out.stderr
    saved = run_netsql("--csv", "-q", "direct-ip-connections")
    assert saved.returncode == 0 and saved.stderr.count(note) == 1, saved.stderr
    # A statement that does not read remote_host, or a DNS source: no such notice.
    assert note not in run_netsql("-e", "SELECT remote_address FROM sockets").stderr
    empty = os.path.join(str(tmp_path), "empty.pcap")
    with open(empty, "wb") as f:  # a pcap file header (LINKTYPE_RAW) and no packets
        f.write(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000065000000"))
    with_pcap = run_netsql("--pcap", empty, "-e", "SELECT remote_host FROM sockets")
    assert with_pcap.returncode == 0 and note not in with_pcap.stderr, with_pcap.stderr


def test_dot_commands_from_stdin_and_files(tmp_path: os.PathLike[str]) -> None:
    """As sqlite3 and duckdb: `echo .tables | netsql`, and .mode/.headers in -f files."""
    out = run_netsql("--format", "csv", input=".tables\n")
    assert out.returncode == 0, out.stderr
    names = [row[0] for row in csv.reader(io.StringIO(out.stdout, newline=""))]
    assert names[0] == "name" and {"sockets", "processes", "dns_queries"} <= set(names)
    script = os.path.join(str(tmp_path), "script.sql")
    with open(script, "w") as f:
        f.write("-- a report\n.mode csv\nSELECT 1 AS a,\n  2 AS b;\n.headers off\n"
                "SELECT 3, 4;\n.quit\nSELECT 'not run';\n")
    out = run_netsql("-f", script)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert list(csv.reader(io.StringIO(out.stdout, newline=""))) == [
        ["a", "b"], ["1", "2"], ["3", "4"]]
    bad = run_netsql(input=".bogus\nSELECT 'not run';\n")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith("netsql: error: unknown command .bogus")
    assert bad.stderr.count("\n") == 1


def test_help_lists_subcommands_and_help_topics() -> None:
    main_help = run_netsql("--help")
    assert main_help.returncode == 0
    for word in ("netsql serve", "netsql intel", "netsql help [TOPIC]"):
        assert word in main_help.stdout
    assert run_netsql("help").stdout == main_help.stdout
    for topic, want in (("serve", "--socket"), ("intel", "import"),
                        ("sockets", "remote_host"), ("dns-top", "-p limit=INT"),
                        ("formats", "jsonl"), ("queries", "direct-ip-connections")):
        out = run_netsql("help", topic)
        assert out.returncode == 0 and want in out.stdout, (topic, out.stderr)
    bad = run_netsql("help", "sokets")
    assert bad.returncode == ExitStatus.USAGE and bad.stdout == ""
    assert bad.stderr.startswith("netsql: error: no help topic 'sokets' (did you mean sockets?)")


def test_error_positions_are_in_the_whole_input() -> None:
    """An error in a later statement points where it is in the -e text, as a parse
    error does."""
    out = run_netsql("-e", "SELECT 1; SELECT * FROM nope")
    assert out.returncode == 1 and "│ 1 │" in out.stdout
    assert out.stderr == "netsql: error: no such table: nope (line 1, column 25)\n"
    out = run_netsql("-e", "SELECT 1;\n  SELECT *\n   FROM nope")
    assert out.stderr.endswith("(line 3, column 9)\n"), out.stderr
    parse = run_netsql("-e", "SELECT 1; SELEC 2")
    assert parse.stderr.endswith("(line 1, column 11)\n"), parse.stderr


def test_a_saved_query_used_as_a_table_suggests_q() -> None:
    out = run_netsql("-e", "SELECT * FROM connections")
    assert out.returncode == 1
    assert out.stderr == ("netsql: error: no such table: connections; connections is a saved "
                          "query: run it with netsql -q connections (.run connections in the "
                          "shell) (line 1, column 15)\n")


def test_several_statements_stay_one_parseable_document(tmp_path: os.PathLike[str]) -> None:
    """json: one array of per-statement arrays; jsonl: rows tagged with their
    statement; csv: one table with a statement column (same name, same column)."""
    sql = "SELECT 1 AS a, 'x' AS b; CREATE TABLE t (x INTEGER); SELECT 2 AS a, 3 AS c"
    out = run_netsql("--json", "-e", sql)
    assert out.returncode == 0 and json.loads(out.stdout) == [
        [{"a": 1, "b": "x"}], [{"a": 2, "c": 3}]]
    out = run_netsql("--format", "jsonl", "-e", sql)
    assert [json.loads(line) for line in out.stdout.splitlines()] == [
        {"statement": 1, "a": 1, "b": "x"}, {"statement": 2, "a": 2, "c": 3}]
    out = run_netsql("--csv", "-e", sql)
    assert list(csv.reader(io.StringIO(out.stdout, newline=""))) == [
        ["statement", "a", "b", "c"], ["1", "1", "x", ""], ["2", "2", "", "3"]]
    # One statement that returns rows: the plain shapes, whatever else runs.
    assert json.loads(run_netsql("--json", "-e", "SET threads = 1; SELECT 1 AS a").stdout) == [
        {"a": 1}]
    # An error after the first result still leaves valid JSON behind.
    bad = run_netsql("--json", "-e", "SELECT 1 AS a; SELECT * FROM nope")
    assert bad.returncode == 1 and json.loads(bad.stdout) == [[{"a": 1}]]


def test_dns_top_in_csv_is_one_table(tmp_path: os.PathLike[str]) -> None:
    from tests.dnsutil import udp_ip
    from tests.test_fastscan import pcap, query

    path = os.path.join(str(tmp_path), "q.pcap")
    with open(path, "wb") as f:
        f.write(pcap([(1.0 + i, 101, udp_ip("192.0.2.1", "198.51.100.53", 4000 + i, 53,
                                             query(i + 1, name))) for i, name in
                      enumerate(["a.example.test", "b.example.test", "a.example.test"])]))
    out = run_netsql("--pcap", path, "--csv", "-q", "dns-top")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout, newline="")))
    assert {r["statement"] for r in rows} == {"1", "2", "3", "4", "5", "6", "7"}
    third = [(r["third_level"], r["queries"]) for r in rows if r["statement"] == "7"]
    assert third == [("a.example.test", "2"), ("b.example.test", "1")]
