"""The shell's input path without a terminal: SQL, dot-commands, errors, output
targets, cancelling. (test_repl_terminal.py drives the real thing in tmux.)"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from netsql.collect import Collection, Need, State
from netsql.context import Env
from netsql.engine import Engine
from netsql.registry import default_tables
from netsql.repl.commands import default_commands
from netsql.repl.face import Command, CommandError, Outcome
from netsql.repl.shell import Shell, caret_lines, catalog_changes
from netsql.repl.shelldoc import shell_md
from netsql.repl.sqltext import input_complete, is_complete, split_input
from netsql.schema import Column, Columns, Table

ROOT = Path(__file__).resolve().parent.parent


class Out:
    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def __call__(self, text: str) -> tuple[Outcome, str, str]:
        """Run ``text``; (outcome, new stdout, new stderr)."""
        env = self.shell.env
        assert isinstance(env.stdout, io.StringIO) and isinstance(env.stderr, io.StringIO)
        o, e = len(env.stdout.getvalue()), len(env.stderr.getvalue())
        outcome = self.shell.run_input(text)
        return outcome, env.stdout.getvalue()[o:], env.stderr.getvalue()[e:]


def make_shell(engine: Engine | None = None, **kw: Any) -> Shell:
    env = Env(stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO(),
              stdin_isatty=True, stdout_isatty=True, width=100)
    shell = Shell(engine or Engine(), env, **kw)
    shell.pager = None
    return shell


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


@pytest.fixture
def run(engine: Engine) -> Out:
    return Out(make_shell(engine))


def test_statements_on_one_line_run_in_order(run: Out) -> None:
    outcome, out, err = run("SELECT 1 AS first; SELECT 2 AS second;")
    assert outcome is Outcome.OK and err == ""
    assert out.index("first") < out.index("second")


def test_bad_statement_prints_one_line_with_caret_and_shell_goes_on(run: Out) -> None:
    outcome, out, err = run("SELECT 42 AS answer, nope FROM sockets;")
    assert outcome is Outcome.ERROR and out == ""
    lines = err.splitlines()
    assert len(lines) == 3, err
    assert lines[0] == "  SELECT 42 AS answer, nope FROM sockets"
    assert lines[1] == "  " + " " * len("SELECT 42 AS answer, ") + "^"
    assert lines[2].startswith("netsql: error: ") and "nope" in lines[2]
    assert run("SELECT 7 AS seven;")[0] is Outcome.OK


def test_error_stops_the_rest_of_the_input(run: Out) -> None:
    outcome, out, err = run("SELECT 1 AS a; SELECT nope; SELECT 3 AS c;\n.mode csv")
    assert outcome is Outcome.ERROR and " a " in out and " c " not in out
    assert run.shell.mode == "table"


def test_errors_never_carry_control_characters(run: Out) -> None:
    outcome, out, err = run("SELECT '\x1b[31m' AS x, nope;")
    assert outcome is Outcome.ERROR and "\x1b" not in err and "\\x1b" in err
    _, _, err = run(".schema \x1b[2J")
    assert "\x1b" not in err and len(err.splitlines()) == 1


def test_caret_stays_under_the_column_on_long_lines() -> None:
    stmt = "SELECT " + ", ".join(f"c{i}" for i in range(100)) + ", nope FROM t"
    col = stmt.index("nope") + 1
    text, caret = caret_lines(stmt, 1, col, 60)
    assert len(text) <= 62 and text[caret.index("^"):].startswith("nope")
    text, caret = caret_lines("SELECT 1,\n\tbad(1)", 2, 2, 80)
    assert text == "  \\tbad(1)" and caret == "    ^"


def test_mode_and_formats(run: Out) -> None:
    assert run(".mode csv")[0] is Outcome.OK
    _, out, _ = run("SELECT 1 AS a, 'x' AS b;")
    assert out == "a,b\r\n1,x\r\n"
    outcome, _, err = run(".mode yaml")
    assert outcome is Outcome.ERROR and "choose from: table, line, csv" in err
    run(".mode json")
    assert json.loads(run("SELECT 5 AS n;")[1]) == [{"n": 5}]


def test_maxrows_cuts_with_a_notice(run: Out) -> None:
    run(".maxrows 5")
    _, out, err = run("SELECT * FROM range(20) t(i);")
    # as the DuckDB shell: the first and the last rows, dots between, the row count
    shown = [line.strip("│ ") for line in out.splitlines() if line.startswith("│")]
    assert shown == ["i", "0", "1", "2", "·", "·", "·", "18", "19", "20 rows (5 shown)"]
    assert err == ""
    run(".mode line")
    _, out, err = run("SELECT * FROM range(20) t(i);")
    assert out.count("i = ") == 5 and "showing the first 5 of 20 rows" in err
    run(".mode table")
    run(".maxrows 0")
    _, out, err = run("SELECT * FROM range(20) t(i);")
    assert out.count("│") == 2 * 21 and err == ""
    assert run(".maxrows many")[0] is Outcome.ERROR


def test_output_and_once_write_files_uncut(run: Out, tmp_path: Path) -> None:
    run(".maxrows 2")
    run(".mode csv")
    path = tmp_path / "all.csv"
    run(f".output {path}")
    _, out, err = run("SELECT * FROM range(10) t(i);")
    assert out == "" and err == ""
    run(".output stdout")
    assert path.read_text().split() == ["i", *map(str, range(10))]
    once = tmp_path / "once.csv"
    run(f".once {once}")
    _, out, _ = run("SELECT 1 AS a;")
    assert out == "" and once.read_text().split() == ["a", "1"]
    _, out, _ = run("SELECT 2 AS b;")
    assert out.split() == ["b", "2"]


def test_read_runs_sql_and_commands_and_stops_at_an_error(run: Out, tmp_path: Path) -> None:
    script = tmp_path / "s.sql"
    script.write_text(".mode csv\nSELECT 1 AS a;\nSELECT\n  2 AS b;\n.quit\nSELECT 3 AS c;\n")
    outcome, out, err = run(f".read {script}")
    assert outcome is Outcome.OK and out.split() == ["a", "1", "b", "2"] and err == ""
    script.write_text("SELECT 1 AS a;\nSELECT nope;\nSELECT 3 AS c;\n")
    outcome, out, err = run(f".read {script}")
    assert outcome is Outcome.ERROR and out.split() == ["a", "1"]
    assert err.splitlines()[-1].startswith(f"netsql: error: {script}: ")
    outcome, _, err = run(".read /nonexistent.sql")
    assert outcome is Outcome.ERROR
    assert err == "netsql: error: .read /nonexistent.sql: No such file or directory\n"


def test_tables_and_schema_with_descriptions(run: Out) -> None:
    _, out, _ = run(".tables")
    for t in default_tables():
        assert t.name in out
    _, out, _ = run(".tables listen")
    assert "listening_ports" in out and "processes" not in out
    _, out, _ = run(".schema sockets")
    sockets = next(t for t in default_tables() if t.name == "sockets")
    flat = " ".join(out.split())
    for c in sockets.columns:
        assert f"{c.name} {c.type}" in flat and " ".join(c.description.split()) in flat
    outcome, _, err = run(".schema sokets")
    assert outcome is Outcome.ERROR and err == (
        "netsql: error: no such table: sokets (did you mean sockets?)\n")
    run(".mode json")
    rows = json.loads(run(".schema processes")[1])
    assert rows[0] == {"table": "processes", "column": "pid", "type": "INTEGER",
                       "description": "Process id"}


def test_unknown_dot_command_suggests(run: Out) -> None:
    outcome, out, err = run(".tabels")
    assert outcome is Outcome.ERROR and out == ""
    assert err == "netsql: error: unknown command .tabels (did you mean .tables?); " \
                  ".help lists them\n"


def test_help_is_generated_from_the_registry(run: Out) -> None:
    _, out, _ = run(".help")
    for c in default_commands():
        for n in c.names:
            assert f".{n}" in out
        assert c.help[:40] in " ".join(out.split())
    _, out, _ = run(".help maxrows")
    assert out.startswith(".maxrows [N]\n") and "never cut" in out


def test_shell_doc_is_generated_and_current() -> None:
    text = (ROOT / "docs" / "shell.md").read_text(encoding="utf-8")
    assert text == shell_md(default_commands()), "run python -m netsql.docgen"
    for c in default_commands():
        assert f"`.{c.name}" in text


def test_timer_and_quit(run: Out) -> None:
    run(".timer on")
    _, _, err = run("SELECT 1;")
    assert err.startswith("Time: ") and "1 row)" in err
    assert run(".quit")[0] is Outcome.QUIT
    assert run(".exit")[0] is Outcome.QUIT
    assert run("quit")[0] is Outcome.QUIT


class FakeCapture:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.running = False
        self.hold_wanted = False

    def status(self) -> dict[str, Any]:
        return {"running": self.running, "interfaces": ["lo"], "messages": 12,
                "dropped": 0, "evicted": 1}

    def start(self, interfaces: list[str] | None) -> None:
        self.calls.append(("start", interfaces))
        self.running = True

    def stop(self) -> None:
        self.calls.append(("stop", None))
        self.running = False


def test_capture_absent_and_present() -> None:
    run = Out(make_shell(Engine()))
    outcome, out, err = run(".capture")
    assert outcome is Outcome.ERROR and err == "netsql: error: capture is not available\n"
    cap = FakeCapture()
    run = Out(make_shell(Engine(state=State(capture=cap))))
    _, out, _ = run(".capture")
    assert "messages" in out and "12" in out
    run(".capture start eth0 lo")
    run(".capture interface lo")
    run(".capture stop")
    run(".capture start")
    assert cap.calls == [("start", ["eth0", "lo"]), ("stop", None), ("start", ["lo"]),
                         ("stop", None), ("start", ["lo"])]
    assert run(".capture bogus")[0] is Outcome.ERROR


def test_capture_hold_on_and_off_restart_a_running_capture() -> None:
    cap = FakeCapture()
    run = Out(make_shell(Engine(state=State(capture=cap))))
    run(".capture hold on")  # not running: only remembered for the next start
    assert cap.hold_wanted and cap.calls == []
    run(".capture start")
    run(".capture hold off")
    assert not cap.hold_wanted
    assert cap.calls == [("start", None), ("stop", None), ("start", None)]
    assert run(".capture hold maybe")[0] is Outcome.ERROR


def test_extra_commands_join_the_registry() -> None:
    def boom(shell: Shell, args: list[str]) -> None:
        raise CommandError(f"no saved query {args[0]}")

    run = Out(make_shell(Engine(), commands=[*default_commands(),
                                             Command("run", "NAME", "Run a query", boom)]))
    assert run(".run x")[2] == "netsql: error: no saved query x\n"
    assert ".run NAME" in run(".help")[1]


def test_input_splitting_and_completeness() -> None:
    assert split_input(".mode csv\nSELECT 1;\nSELECT\n2; SELECT 3;\n-- c\n.tables") == [
        ("command", ".mode csv"), ("sql", "SELECT 1;"), ("sql", "SELECT\n2; SELECT 3;"),
        ("command", ".tables")]
    assert split_input("SELECT 'a;\n.b';") == [("sql", "SELECT 'a;\n.b';")]
    assert is_complete("SELECT 1; -- done") and not is_complete("SELECT ';'")
    assert not is_complete("SELECT 1 /* ; */") and is_complete("SELECT $$x;$$;")
    assert input_complete(".tables") and input_complete("") and input_complete("quit")
    assert not input_complete("SELECT 1\nFROM t") and input_complete("SELECT 1\nFROM t;")
    assert catalog_changes("SELECT 1; CREATE MACRO m() AS 1") == {"tables", "functions"}
    assert catalog_changes("SELECT 'create'") == set()


def _slow_table(started: threading.Event) -> Table:
    def collect(coll: Collection, need: Need) -> Columns:
        started.set()
        cancel = coll.state.cancel
        assert cancel is not None
        cancel.wait(30)  # a capture window that honours the cancel flag
        return {"n": [1]}

    return Table("slow", "A collection that takes its time", (Column("n", "INTEGER", "n"),),
                 collect)


def _interrupt_when(started: threading.Event, delay: float = 0.2) -> None:
    """SIGINT to ourselves (the main thread gets KeyboardInterrupt, as from Ctrl-C)."""
    def fire() -> None:
        started.wait(10)
        time.sleep(delay)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=fire, daemon=True).start()


def test_ctrl_c_cancels_a_query_and_the_next_one_works(run: Out) -> None:
    started = threading.Event()
    started.set()
    _interrupt_when(started, delay=0.7)
    t0 = time.monotonic()
    outcome, out, err = run("SELECT count(*) FROM range(1000000000000);")
    assert outcome is Outcome.ERROR and err == "netsql: interrupted\n"
    assert time.monotonic() - t0 < 5
    assert "42" in run("SELECT 42;")[1]


def test_ctrl_c_cancels_a_long_collection() -> None:
    started = threading.Event()
    run = Out(make_shell(Engine(tables=[_slow_table(started)])))
    _interrupt_when(started)
    t0 = time.monotonic()
    outcome, _, err = run("SELECT * FROM slow;")
    assert outcome is Outcome.ERROR and err == "netsql: interrupted\n"
    assert time.monotonic() - t0 < 5
    assert not run.shell.cancel.is_set()


def test_a_failing_collector_is_one_line_and_the_shell_goes_on() -> None:
    def broken(coll: Collection, need: Need) -> Columns:
        raise RuntimeError("collector bug\nsecond line")

    table = Table("broken", "Always fails", (Column("n", "INTEGER", "n"),), broken)
    run = Out(make_shell(Engine(tables=[table])))
    outcome, out, err = run("SELECT * FROM broken;")
    assert outcome is Outcome.ERROR and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("netsql: error: ")
    assert "collector bug" in err and "second line" not in err
    assert run("SELECT 1 AS fine;")[0] is Outcome.OK


def test_run_saved_query_with_typed_parameters(run: Out) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        run.shell.mode = "csv"
        outcome, out, err = run(".run listening protocol=tcp")
        assert outcome is Outcome.OK, err
        assert f"127.0.0.1,{port}," in out
        outcome, out, err = run(".run listening wildcard_only=maybe")
        assert outcome is Outcome.ERROR and "wildcard_only" in err
        assert len(err.strip().splitlines()) == 1
    outcome, _, err = run(".run nosuchquery")
    assert outcome is Outcome.ERROR and "no saved query named 'nosuchquery'" in err
    # A hostile value is a string parameter, never SQL.
    outcome, out, err = run(".run trace-domain \"domain=x'; DROP TABLE processes; --\"")
    assert outcome is Outcome.OK, err
    assert run("SELECT count(*) > 0 AS ok FROM processes;")[1].splitlines()[-1] == "true"
    run.shell.mode = "table"


def test_queries_lists_shipped_queries(run: Out) -> None:
    outcome, out, _ = run(".queries trace")
    assert outcome is Outcome.OK
    assert "trace-domain" in out and "listening" not in out


def test_tables_lists_only_what_a_statement_can_name(tmp_path: Path) -> None:
    """Not the intel database's internal tables (indicators, schema_version, sources):
    a statement reaches those only through the intel views."""
    run = Out(make_shell(Engine(state=State(intel_db=str(tmp_path / "none.duckdb")))))
    assert run("SELECT count(*) FROM flagged; CREATE TABLE mine (a INTEGER); "
               "CREATE SCHEMA extra; CREATE VIEW extra.v AS SELECT 1 AS one;")[0] is Outcome.OK
    run(".mode json")
    outcome, out, err = run(".tables")
    assert outcome is Outcome.OK, err
    names = {r["name"] for r in json.loads(out)}
    assert {"intel", "intel_sources", "flagged", "mine", "extra.v", "sockets"} <= names
    assert not {n.rsplit(".", 1)[-1] for n in names} & {"indicators", "schema_version",
                                                          "sources"}, names
    for name in names:  # every name listed is one a statement can use, as listed
        assert run(f"SELECT * FROM {name} LIMIT 0;")[0] is Outcome.OK, name
