"""Completion over prompt_toolkit Documents: tables, aliased columns, dot-commands."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent, Completion
from prompt_toolkit.document import Document

from netsql.context import Env
from netsql.engine import Engine
from netsql.formats import format_names
from netsql.registry import default_tables
from netsql.repl.commands import default_commands
from netsql.repl.completer import ShellCompleter
from netsql.repl.shell import Shell

TABLES = {t.name: t for t in default_tables()}


@pytest.fixture(scope="module")
def shell() -> Iterator[Shell]:
    env = Env(stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO(),
              stdin_isatty=False, stdout_isatty=False, width=100)
    yield Shell(Engine(), env, commands=default_commands(),
                sources={"query": lambda: [("suspicious_dns", "Who asked for a name"),
                                           ("listeners", "What listens")]})


@pytest.fixture(scope="module")
def completer(shell: Shell) -> ShellCompleter:
    return ShellCompleter(shell.catalog, shell.commands, shell.formats, shell.sources)


def complete(completer: ShellCompleter, before: str, after: str = "",
             requested: bool = True) -> list[Completion]:
    doc = Document(before + after, len(before))
    return list(completer.get_completions(doc, CompleteEvent(completion_requested=requested)))


def texts(completions: list[Completion]) -> list[str]:
    return [c.text for c in completions]


def meta(completions: list[Completion], text: str) -> str:
    return next(c.display_meta_text for c in completions if c.text == text)


def test_tables_after_from(completer: ShellCompleter) -> None:
    got = complete(completer, "SELECT * FROM sock")
    assert texts(got)[0] == "sockets"
    assert got[0].start_position == -4
    assert meta(got, "sockets").startswith(TABLES["sockets"].description[:30])
    # An empty word after FROM lists every table of the registry, in its order.
    assert texts(complete(completer, "SELECT * FROM "))[:len(TABLES)] == list(TABLES)


def test_tables_after_join_comma_and_table_functions(completer: ShellCompleter) -> None:
    assert texts(complete(completer, "SELECT * FROM sockets s JOIN pro"))[0] == "processes"
    assert texts(complete(completer, "SELECT * FROM sockets s, listening_"))[0] == (
        "listening_ports")
    got = complete(completer, "SELECT * FROM rang")
    assert "range" in texts(got) and "table function" in meta(got, "range")


def test_aliased_columns_with_type_and_description(completer: ShellCompleter) -> None:
    got = complete(completer, "SELECT s.remote_a", " FROM sockets s")
    assert texts(got) == ["remote_address"]
    assert got[0].start_position == -len("remote_a")
    col = TABLES["sockets"].column("remote_address")
    assert meta(got, "remote_address") == f"{col.type} · {col.description}"


def test_alias_defined_after_the_cursor_in_a_join(completer: ShellCompleter) -> None:
    after = " FROM sockets s JOIN processes AS p USING (pid) WHERE s.state = 'LISTEN'"
    assert texts(complete(completer, "SELECT p.", after)) == TABLES["processes"].column_names
    assert texts(complete(completer, "SELECT s.", after)) == TABLES["sockets"].column_names
    assert texts(complete(completer, "SELECT p.cm", after)) == ["cmdline"]
    # The table's own name works as a qualifier too.
    assert "local_port" in texts(complete(completer, "SELECT sockets.local", " FROM sockets"))


def test_every_registry_column_is_offered(completer: ShellCompleter) -> None:
    for name, table in TABLES.items():
        got = complete(completer, "SELECT t.", f" FROM {name} t")
        assert texts(got) == table.column_names, name
        for c in table.columns:
            assert meta(got, c.name).startswith(c.type)


def test_unqualified_columns_of_tables_in_scope(completer: ShellCompleter) -> None:
    got = complete(completer, "SELECT rem", " FROM sockets")
    assert texts(got)[:2] == ["remote_address", "remote_port"]
    got = complete(completer, "SELECT pi", " FROM sockets s JOIN processes p USING (pid)")
    assert texts(got)[0] == "pid"
    assert "sockets" in meta(got, "pid") and "processes" in meta(got, "pid")
    where = complete(completer, "SELECT * FROM processes WHERE exe_")
    assert texts(where)[0] == "exe_deleted"


def test_keywords_and_functions(completer: ShellCompleter) -> None:
    assert texts(complete(completer, "SEL"))[0] == "SELECT"
    assert texts(complete(completer, "sel"))[0] == "select"
    got = complete(completer, "SELECT list_con")
    assert "list_contains" in texts(got) and "scalar" in meta(got, "list_contains")
    assert "count" in texts(complete(completer, "SELECT coun", " FROM sockets"))


def test_quiet_inside_strings_and_while_typing_blanks(completer: ShellCompleter) -> None:
    assert complete(completer, "SELECT * FROM sockets WHERE state = 'LIS") == []
    assert complete(completer, "SELECT 1 -- FROM so") == []
    assert complete(completer, "SELECT ", " FROM sockets", requested=False) == []
    assert complete(completer, "SELECT ", " FROM sockets")  # Tab: every column


def test_second_statement_has_its_own_scope(completer: ShellCompleter) -> None:
    before = "SELECT 1 FROM processes p; SELECT p."
    assert texts(complete(completer, before, " FROM sockets p")) == (
        TABLES["sockets"].column_names)


def test_user_tables_and_columns(shell: Shell, completer: ShellCompleter) -> None:
    shell.run_input("CREATE TABLE evidence(first_seen TIMESTAMP, bee VARCHAR);")
    got = complete(completer, "SELECT * FROM evi")
    assert texts(got)[0] == "evidence" and meta(got, "evidence") == "table"
    assert texts(complete(completer, "SELECT e.b", " FROM evidence e")) == ["bee"]
    shell.run_input("DROP TABLE evidence;")
    assert "evidence" not in texts(complete(completer, "SELECT * FROM evi"))


def test_dot_commands(completer: ShellCompleter) -> None:
    got = complete(completer, ".")
    names = [n for c in default_commands() for n in c.names]
    assert texts(got) == ["." + n for n in names]
    sch = complete(completer, ".sch")
    assert texts(sch) == [".schema"] and sch[0].start_position == -4
    assert texts(complete(completer, ".mode ")) == format_names()
    assert texts(complete(completer, ".mode js")) == ["json", "jsonl"]
    assert texts(complete(completer, ".schema sock")) == ["sockets"]
    assert texts(complete(completer, ".timer ")) == ["on", "off"]
    assert texts(complete(completer, ".capture st")) == ["status", "start", "stop"]
    assert texts(complete(completer, ".help ta")) == ["tables"]
    assert complete(completer, ".nosuch ") == []


def test_dot_command_files_and_extra_sources(completer: ShellCompleter,
                                             tmp_path: Path) -> None:
    (tmp_path / "query.sql").write_text("SELECT 1;")
    got = complete(completer, f".read {tmp_path}/qu")
    assert texts(got) == ["ery.sql"]
    assert "stdout" in texts(complete(completer, ".output "))
    got = complete(completer, ".run sus")
    assert texts(got) == ["suspicious_dns"] and meta(got, "suspicious_dns") == (
        "Who asked for a name")
