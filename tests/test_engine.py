"""The statement path: which tables a statement needs, one pass, fresh data, loading."""

from __future__ import annotations

import dataclasses
import datetime
import os
import socket
from collections import Counter
from typing import Any

import pytest

from netsql.collect import Collection, Need, State
from netsql.engine import Engine, NetsqlError
from netsql.registry import default_tables
from netsql.schema import Table


class Recorder:
    """Real tables, with each collector call recorded (table name, need, pass id)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Need, int]] = []
        self.passes: list[Collection] = []  # kept alive, so ids are never reused

    def wrap(self, table: Table) -> Table:
        inner = table.collect

        def collect(coll: Collection, need: Need) -> Any:
            self.passes.append(coll)
            self.calls.append((table.name, need, id(coll)))
            return inner(coll, need)

        return dataclasses.replace(table, collect=collect)

    def tables(self) -> list[str]:
        return [c[0] for c in self.calls]


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def engine(rec: Recorder) -> Engine:
    return Engine([rec.wrap(t) for t in default_tables()])


def rows(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    results = list(engine.run(sql))
    assert results[-1].data is not None
    return list(results[-1].data.rows)


REFERENCES = [
    ("SELECT * FROM sockets s JOIN processes p USING (pid) LIMIT 1", {"sockets", "processes"}),
    ("SELECT * FROM sockets NATURAL JOIN processes LIMIT 1", {"sockets", "processes"}),
    ('SELECT count(*) FROM "sockets"', {"sockets"}),
    ("WITH processes AS (SELECT 1 AS pid) SELECT * FROM processes", set()),
    ("WITH x AS (SELECT pid FROM processes) SELECT count(*) FROM x", {"processes"}),
    ("SELECT 'sockets', 'FROM processes' AS s", set()),
    ("SELECT * FROM (SELECT pid FROM listening_ports) AS lp WHERE pid > 0", {"listening_ports"}),
    ("SELECT pid FROM processes WHERE pid IN (SELECT pid FROM sockets)", {"processes", "sockets"}),
    ("SELECT 1 -- FROM sockets", set()),
    ("SELECT p.name FROM processes AS sockets JOIN processes p ON p.pid = sockets.ppid LIMIT 1",
     {"processes"}),
]


@pytest.mark.parametrize("sql,expected", REFERENCES)
def test_collects_exactly_the_referenced_tables_once(
    engine: Engine, rec: Recorder, sql: str, expected: set[str]
) -> None:
    list(engine.run(sql))
    counts = Counter(rec.tables())
    assert set(counts) == expected
    assert all(n == 1 for n in counts.values()), counts


def test_one_pass_for_all_tables_of_a_statement(engine: Engine, rec: Recorder) -> None:
    list(engine.run("SELECT count(*) FROM sockets s JOIN processes p USING (pid)"))
    assert len({c[2] for c in rec.calls}) == 1


def test_each_statement_collects_afresh(engine: Engine, rec: Recorder) -> None:
    list(engine.run("SELECT count(*) FROM processes; SELECT count(*) FROM processes"))
    assert rec.tables() == ["processes", "processes"]
    assert len({c[2] for c in rec.calls}) == 2


def test_columns_and_pid_filter_are_pushed_down(engine: Engine, rec: Recorder) -> None:
    list(engine.run("SELECT count(*) FROM sockets"))
    assert rec.calls[-1][1].columns == frozenset()
    assert not rec.calls[-1][1].wants("pid")
    list(engine.run(f"SELECT name FROM processes WHERE pid = {os.getpid()}"))
    need = rec.calls[-1][1]
    assert need.pids == frozenset({os.getpid()})
    assert need.columns is not None and {"name", "pid"} <= need.columns
    assert not need.wants("cmdline")


def test_pid_filter_returns_only_that_process(engine: Engine) -> None:
    got = rows(engine, f"SELECT pid, ppid FROM processes WHERE pid = {os.getpid()}")
    assert got == [(os.getpid(), os.getppid())]


def test_view_sees_fresh_data(engine: Engine) -> None:
    list(engine.run("CREATE VIEW mine AS SELECT local_port FROM sockets "
                    f"WHERE pid = {os.getpid()} AND state = 'LISTEN'"))
    assert rows(engine, "SELECT count(*) FROM mine") == [(0,)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert rows(engine, "SELECT local_port FROM mine") == [(port,)]
    assert rows(engine, "SELECT count(*) FROM mine") == [(0,)]


def test_create_table_as_and_copy_to(engine: Engine, tmp_path: Any) -> None:
    out = tmp_path / "procs.csv"
    list(engine.run("CREATE TABLE snap AS SELECT pid, name FROM processes; "
                    f"COPY (SELECT pid FROM snap ORDER BY pid) TO '{out}' (HEADER)"))
    lines = out.read_text().splitlines()
    assert lines[0] == "pid"
    assert str(os.getpid()) in lines[1:]
    assert rows(engine, f"SELECT name FROM snap WHERE pid = {os.getpid()}")[0][0].startswith(
        "python")


def test_duckdb_functions_work(engine: Engine) -> None:
    assert rows(engine, "SELECT list_contains([1, 2], 2), regexp_matches('ab', 'b')") == [
        (True, True)]


def test_unknown_table_names_closest(engine: Engine) -> None:
    with pytest.raises(NetsqlError) as err:
        list(engine.run("SELECT * FROM socket"))
    assert str(err.value).startswith("no such table: socket (did you mean sockets")
    assert "\n" not in str(err.value)


def test_syntax_error_is_one_line_with_position(engine: Engine) -> None:
    with pytest.raises(NetsqlError) as err:
        list(engine.run("SELECT *\nFORM sockets"))
    assert err.value.line == 2
    assert err.value.column is not None
    assert "\n" not in str(err.value)
    assert "syntax error" in str(err.value)


def test_bulk_load_types(engine: Engine) -> None:
    engine.declare()
    types = dict(engine.con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'sockets'"
    ).fetchall())
    assert types["owners"] == "INTEGER[]"
    got = rows(engine, f"SELECT typeof(start_time), start_time > now() - INTERVAL 1 DAY "
               f"FROM processes WHERE pid = {os.getpid()}")
    assert got == [("TIMESTAMP", True)]


def test_parameters_are_bound(engine: Engine) -> None:
    results = list(engine.run("SELECT pid FROM processes WHERE name = $name",
                              {"name": "x'; DROP TABLE processes; --"}))
    assert results[0].data is not None and list(results[0].data.rows) == []
    assert rows(engine, "SELECT count(*) > 0 FROM processes")[0] == (True,)


def test_catalog_queries_list_every_table(engine: Engine) -> None:
    names = {r[0] for r in rows(engine, "SHOW TABLES")}
    assert {t.name for t in default_tables()} <= names


def test_statement_without_pid_skips_fd_scan() -> None:
    from netsql.tables import sockets

    coll = Collection()
    data = sockets.collect(coll, Need(frozenset({"local_port"})))
    assert data["local_port"] and set(data["pid"]) == {None}
    assert not any(k.startswith("owners") for k in coll._cache)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        coll = Collection()
        data = sockets.collect(coll, Need(frozenset({"pid"})))
    assert "owners" in coll._cache and os.getpid() in data["pid"]


def test_fd_scan_reuse_never_misses_a_new_socket() -> None:
    """Later passes reuse each process's sockets while its fd count stays; a socket that
    replaced a closed one (same count) must still be found."""
    from netsql import procfs

    state = State()
    with socket.socket() as a:
        a.bind(("127.0.0.1", 0))
        a.listen()
        first = procfs.socket_owners(Collection(state=state))
        assert first.first[os.fstat(a.fileno()).st_ino][0] == os.getpid()
        again = procfs.socket_owners(Collection(state=state))
        assert again.reused and again.first == first.first
    with socket.socket() as b:  # same number of open files as before
        b.bind(("127.0.0.1", 0))
        b.listen()
        ino = os.fstat(b.fileno()).st_ino
        third = procfs.socket_owners(Collection(state=state), expect=[ino])
        assert third.first[ino] == (os.getpid(), b.fileno())
        engine = Engine(state=state)
        got = rows(engine, f"SELECT pid, fd FROM sockets WHERE inode = {ino}")
        assert got == [(os.getpid(), b.fileno())]


def test_each_statement_is_parsed_once() -> None:
    """engine.run parses the text once (split); execute reuses that parse for the
    statement's type and parameters."""
    engine = Engine()

    class Counting:
        def __init__(self, con: Any) -> None:
            self.con, self.parses = con, 0

        def extract_statements(self, sql: str) -> Any:
            self.parses += 1
            return self.con.extract_statements(sql)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.con, name)

    counting = Counting(engine.con)
    engine.con = counting  # type: ignore[assignment]
    results = list(engine.run("SELECT $n + 1 AS a; CREATE TEMP TABLE t AS SELECT 1 AS x; "
                              "SELECT pid FROM processes WHERE pid = $n", {"n": os.getpid()}))
    assert counting.parses == 1
    assert [r.data.rows if r.data else None for r in results] == [
        [(os.getpid() + 1,)], None, [(os.getpid(),)]]
    engine.execute("SELECT 2")  # plain text: parsed once, here
    assert counting.parses == 2


def _big_table(n: int, seen: list[Need]) -> Table:
    """A table of ``n`` rows (past netsql/load.py's VIEW_ROWS), its needs recorded."""
    from netsql.schema import Column

    def collect(coll: Collection, need: Need) -> Any:
        seen.append(need)
        return {"id": list(range(n)), "name": [f"host{i % 7}" for i in range(n)],
                "tags": [[str(i % 3)] for i in range(n)], "ts": [float(i) for i in range(n)]}

    return Table("big", "many rows", (
        Column("id", "BIGINT", "a number"), Column("name", "VARCHAR", "a name"),
        Column("tags", "VARCHAR[]", "a list"), Column("ts", "TIMESTAMP", "a time")), collect)


@pytest.mark.parametrize("safe", [False, True])
def test_a_big_table_is_served_as_a_view_for_one_statement(safe: bool) -> None:
    from netsql.load import VIEW_ROWS

    n, seen = VIEW_ROWS + 5, []
    eng = Engine([_big_table(n, seen)], state=State(safe=safe), setups=[])

    def kind() -> list[tuple[Any, ...]]:  # what the catalog says "big" is
        return eng.con.execute(
            "SELECT 'table' FROM duckdb_tables() WHERE table_name = 'big' UNION ALL "
            "SELECT 'view' FROM duckdb_views() WHERE view_name = 'big'").fetchall()

    assert rows(eng, "SELECT count(*) FROM big") == [(n,)]
    assert seen[-1].columns == frozenset()
    assert kind() == [("view",)]
    # every column, read or not, has its declared type and its comment
    assert eng.con.execute("SELECT column_name, data_type, comment FROM duckdb_columns() "
                           "WHERE table_name = 'big' ORDER BY column_index").fetchall() == [
        ("id", "BIGINT", "a number"), ("name", "VARCHAR", "a name"),
        ("tags", "VARCHAR[]", "a list"), ("ts", "TIMESTAMP", "a time")]
    got = rows(eng, "SELECT name, count(*), max(id) FROM big GROUP BY name ORDER BY name")
    assert seen[-1].columns == frozenset({"name", "id"})
    assert got[0] == ("host0", len(range(0, n, 7)), max(range(0, n, 7)))
    assert rows(eng, "SELECT tags, ts FROM big WHERE id = 4") == [
        (["1"], datetime.datetime(1970, 1, 1, 0, 0, 4))]
    # the next statement finds a table again, and what it reads is read afresh
    assert rows(eng, "SELECT 1") == [(1,)]
    assert kind() == [("table",)]
    assert rows(eng, "SELECT sum(id) FROM big WHERE id < 10") == [(45,)]
    assert seen[-1].columns == frozenset({"id"})
    # a user's transaction rolled back over a swap: the catalog, not memory, decides
    list(eng.run("BEGIN"))
    assert rows(eng, "SELECT count(name) FROM big") == [(n,)]
    list(eng.run("ROLLBACK"))
    assert rows(eng, "SELECT count(*) FROM big") == [(n,)]
    assert rows(eng, "SELECT count(*) FROM big WHERE name = 'host1'") == [
        (len(range(1, n, 7)),)]
    # a signal between the swap's DROP and its CREATE: the next statement mends it
    eng.con.execute('DROP VIEW "main"."big"')
    assert rows(eng, "SELECT max(id) FROM big") == [(n - 1,)]
    assert rows(eng, "SELECT 1") == [(1,)] and kind() == [("table",)]


def test_a_result_read_after_the_next_statement_started_keeps_its_rows() -> None:
    from netsql.load import VIEW_ROWS

    n = VIEW_ROWS + 5
    eng = Engine([_big_table(n, [])], setups=[])
    first = list(eng.run("SELECT id FROM big ORDER BY id"))[0]
    second = list(eng.run("SELECT count(*) FROM big"))[0]  # settles the first
    assert first.data is not None and second.data is not None
    assert list(second.data.rows) == [(n,)]
    got = list(first.data.rows)
    assert len(got) == n and got[-1] == (n - 1,)


@pytest.mark.parametrize("rows_", [3, 6000])  # the parameter path and the Arrow path
def test_a_value_duckdb_refuses_is_one_line_error(rows_: int) -> None:
    from netsql.schema import Column

    table = Table("odd", "a collector gone wrong", (Column("n", "INTEGER", "a number"),),
                  lambda coll, need: {"n": [1] * (rows_ - 1) + [2**40]})
    eng = Engine([table], setups=[])
    with pytest.raises(NetsqlError) as err:
        list(eng.run("SELECT n FROM odd"))
    assert str(err.value).startswith("odd: its rows could not be loaded: ")
    assert "\n" not in str(err.value)
    assert rows(eng, "SELECT 42") == [(42,)]  # the engine goes on
