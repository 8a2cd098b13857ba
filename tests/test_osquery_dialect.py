"""osquery mode: osquery's names first and SQLite's dialect (double-quoted strings, LIKE,
integer division, date functions, group_concat), switched by --osquery, .osquery and
the config key."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest

from netsql.context import Env
from netsql.engine import Engine
from netsql.errors import NetsqlError
from netsql.osquery.dialect import is_on, set_mode
from netsql.repl.config import load_config
from netsql.repl.shell import Shell
from tests.conftest import run_netsql


@pytest.fixture
def osq() -> Engine:
    e = Engine()
    set_mode(e, True)
    return e


def one(e: Engine, sql: str) -> Any:
    data = e.execute(sql).data
    assert data is not None and len(data.rows) == 1
    return data.rows[0][0] if len(data.rows[0]) == 1 else data.rows[0]


def test_double_quoted_strings(osq: Engine) -> None:
    assert one(osq, 'SELECT "sshd"') == "sshd"
    assert one(osq, "SELECT count(*) FROM processes WHERE name = \"no such process\"") == 0
    assert one(osq, 'SELECT count(*) FROM processes WHERE pid = 1 AND "name" = name') == 1
    # a word naming a column is that column, as in SQLite
    assert one(osq, "SELECT count(*) FROM routes WHERE gateway = \"gateway\"") == one(
        osq, "SELECT count(*) FROM routes WHERE gateway IS NOT NULL")
    assert one(osq, 'SELECT x AS "my col" FROM (SELECT 1 AS x) ORDER BY "my col"') == 1
    assert one(osq, "SELECT 'it''s \"quoted\"' -- \"comment\"") == 'it\'s "quoted"'
    assert one(osq, 'SELECT "a ""b"" c"') == 'a "b" c'
    # offsets are the tokenizer's UTF-8 byte offsets
    assert osq.execute("SELECT 'ééé' AS a, \"x\" LIKE 'X' AS b, \"ü\" AS c").data.rows == [
        ("ééé", True, "ü")]
    assert one(osq, "SELECT * FROM (SELECT 'é' AS a) WHERE a = \"é\"") == "é"
    osq.execute('CREATE TEMP TABLE t1 ("new col" INTEGER, "b" VARCHAR)')
    osq.execute("INSERT INTO t1 VALUES (5, 'five')")
    assert one(osq, 'SELECT "new col" FROM t1 WHERE "b" = b') == 5  # known after CREATE
    assert one(osq, 'SELECT count(*) FROM t1 WHERE b IN ("five", "six")') == 1
    osq.execute('CREATE TEMP VIEW "my view" AS SELECT "text" AS v')
    assert one(osq, 'SELECT v FROM "my view" WHERE v = "text"') == "text"


def test_like_ignores_ascii_case(osq: Engine) -> None:
    assert one(osq, "SELECT 'SSHD' LIKE 'ssh%'") is True
    assert one(osq, "SELECT 'sshd' NOT LIKE 'SSH%'") is False
    off = Engine()
    assert one(off, "SELECT 'SSHD' LIKE 'ssh%'") is False


def test_integer_division_on_and_off(osq: Engine) -> None:
    assert one(osq, "SELECT 7 / 2") == 3
    assert one(osq, "SELECT 7.0 / 2") == 3.5
    set_mode(osq, False)
    assert one(osq, "SELECT 7 / 2") == 3.5


def test_sqlite_date_functions(osq: Engine) -> None:
    assert one(osq, "SELECT datetime(0, 'unixepoch')") == "1970-01-01 00:00:00"
    assert one(osq, "SELECT datetime(86461, 'unixepoch')") == "1970-01-02 00:01:01"
    assert one(osq, "SELECT date(86400, 'unixepoch')") == "1970-01-02"
    assert one(osq, "SELECT time(3661, 'unixepoch')") == "01:01:01"
    assert one(osq, "SELECT strftime('%Y-%m-%d %H', 90000, 'unixepoch')") == "1970-01-02 01"
    now = one(osq, "SELECT strftime('%s', 'now')")
    assert isinstance(now, int) and abs(now - time.time()) < 5
    assert one(osq, "SELECT strftime('%s', 'now') - 120 < unix_time FROM time") is True
    assert one(osq, "SELECT strftime(\"%s\", '1970-01-02 00:00:00')") == 86400
    assert one(osq, "SELECT date('now')") == time.strftime("%Y-%m-%d", time.gmtime())
    assert one(osq, "SELECT datetime('now', 'localtime') IS NOT NULL") is True
    with pytest.raises(NetsqlError, match="start of month.*not supported"):
        osq.execute("SELECT datetime('now', 'start of month')")


def test_group_concat_and_regex_match(osq: Engine) -> None:
    assert one(osq, "SELECT group_concat(x) FROM (VALUES ('a'), ('b')) t(x)") == "a,b"
    assert one(osq, "SELECT group_concat(x, ' ') FROM (VALUES ('a'), ('b')) t(x)") == "a b"
    assert one(osq, "SELECT regex_match('pid=42;', 'pid=([0-9]+)', 1)") == "42"
    assert one(osq, "SELECT regex_match('none', '([0-9]+)', 1)") is None


def test_osquery_names_first(osq: Engine) -> None:
    cols = osq.execute("SELECT * FROM processes WHERE pid = 1").data
    assert cols is not None and "on_disk" in cols.columns
    own = osq.execute("SELECT * FROM main.processes WHERE pid = 1").data
    assert own is not None and "ppid" in own.columns
    join = one(osq, "SELECT count(*) FROM processes p JOIN process_open_sockets s "
                    "USING (pid) WHERE p.pid = 1")
    assert join >= 0
    set_mode(osq, False)
    back = osq.execute("SELECT * FROM processes WHERE pid = 1").data
    assert back is not None and back.columns == own.columns


def test_hosts_is_etc_hosts(osq: Engine, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("192.0.2.1 one.example\n")
    monkeypatch.setenv("NETSQL_ETC_HOSTS", str(hosts))
    data = osq.execute("SELECT * FROM hosts").data
    assert data is not None and data.rows == [("192.0.2.1", "one.example")]
    assert data.columns == ["address", "hostnames"]


def test_hidden_columns_in_osquery_mode(osq: Engine) -> None:
    star = osq.execute("SELECT * FROM users u LIMIT 1").data
    assert star is not None and "include_remote" not in star.columns
    star = osq.execute("SELECT u.* FROM users u JOIN groups g USING (gid) LIMIT 1").data
    assert star is not None and "pid_with_namespace" not in star.columns
    sub = osq.execute("SELECT * FROM (SELECT * FROM processes) LIMIT 1").data
    assert sub is not None and "upid" not in sub.columns
    assert one(osq, "SELECT upid FROM processes WHERE pid = 1") is None


def test_shell_dot_command_and_config(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    env = Env(stdin=io.StringIO(), stdout=out, stderr=err, stdin_isatty=False,
              stdout_isatty=False)
    shell = Shell(Engine(), env)
    shell.run_input(".osquery")
    assert "osquery mode: off" in out.getvalue()
    shell.run_input(".osquery on\nSELECT \"x\" AS v;")
    assert is_on(shell.engine) and "osquery mode: on" in out.getvalue()
    shell.run_input(".osquery maybe")
    assert "usage: .osquery on|off" in err.getvalue()
    shell.run_input(".osquery off")
    assert not is_on(shell.engine)
    cfg = tmp_path / "config.toml"
    cfg.write_text("osquery = true\n")
    assert load_config(cfg).osquery is True
    cfg.write_text('osquery = "yes"\n')
    assert load_config(cfg).osquery is False and load_config(cfg).warnings


def test_cli_flag() -> None:
    done = run_netsql("--osquery", "--format", "csv", "-e",
                      'SELECT pid, name = "x" AS is_x FROM processes WHERE pid = 1')
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["pid,is_x", "1,false"]
    done = run_netsql("-e", 'SELECT name FROM processes WHERE name = "x"')
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "a string is written 'x' (--osquery reads" in done.stderr


def test_one_liners_do_not_import_osquery_tables() -> None:
    """osquery's tables are added on their first mention: `netsql -e 'SELECT 1'` does
    not pay for importing them."""
    import subprocess
    import sys

    code = ("import sys\nfrom netsql.engine import Engine\ne = Engine()\n"
            "e.execute('SELECT 1')\nprint('netsql.osquery.processes' in sys.modules, "
            "'osquery.processes' in e.tables)\n"
            "e.execute('SELECT count(*) FROM osquery.time')\n"
            "print('netsql.osquery.processes' in sys.modules, 'osquery.processes' in e.tables)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["False", "False", "True", "True"]


def test_netsql_functions_keep_their_answers_in_osquery_mode(osq: Engine) -> None:
    """integer_division must not change netsql's own macros (intel's ratios)."""
    assert one(osq, "SELECT string_entropy('aabb')") == 1.0
    assert one(osq, "SELECT domain_digit_ratio('ab12.com')") == 0.5


def test_help_names_an_osquery_table() -> None:
    done = run_netsql("help", "osquery.listening_ports")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("osquery.listening_ports: ")
    assert any(line.split()[:2] == ["socket", "BIGINT"] for line in lines[2:])
    done = run_netsql("help", "osquery.no_such_table")
    assert done.returncode == 2 and "no help topic" in done.stderr


def test_completion_names_osquery_tables_as_schema_dot_table() -> None:
    """The shell completes osquery.process_open_sockets as a statement names it (schema
    and table quoted apart when needed), never as one quoted identifier."""
    import io

    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from netsql.osquery.dialect import load_tables
    from netsql.repl.commands import default_commands
    from netsql.repl.completer import ShellCompleter
    from netsql.repl.shell import Shell

    env = Env(stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO(),
              stdin_isatty=False, stdout_isatty=False, width=100)
    engine = Engine()
    load_tables(engine)
    shell = Shell(engine, env, commands=default_commands())
    completer = ShellCompleter(shell.catalog, shell.commands, shell.formats, shell.sources)
    before = "SELECT * FROM process_open_so"
    got = [c.text for c in completer.get_completions(
        Document(before, len(before)), CompleteEvent(completion_requested=True))]
    assert "osquery.process_open_sockets" in got
    assert not any(t.startswith('"') for t in got)
