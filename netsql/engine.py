"""The engine: one DuckDB connection, the virtual tables, and the statement path.

For each statement: ask DuckDB's binder which virtual tables (and which of their
columns, under which pushed-down filters) the statement scans, collect those
tables once in one pass, load them in bulk, then run the statement. The engine
knows no terminal.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb

from netsql import dbconfig, plans, results, signals
from netsql.collect import Collection, Need, State, pids_from_filters
from netsql.errors import Interrupted, NetsqlError
from netsql.formats.base import ResultSet
from netsql.paths import spill_dir
from netsql.schema import Setup, Table

# Statement types whose result is data; the others (CREATE, INSERT, SET, ...) print nothing.
QUERY_TYPES = {"SELECT", "EXPLAIN", "PRAGMA", "CALL", "EXECUTE", "RELATION", "MULTI"}

# Optimizers that, on the empty stand-in tables, would fold scans away before we can
# see them in EXPLAIN's plan.
_EXPLAIN_OFF = "statistics_propagation,empty_result_pullup"


# Words of statements that list the catalog rather than name a table.
_CATALOG_WORDS = ("show", "duckdb_", "information_schema", "pg_", "describe", "table_info",
                  "sqlite_master", "pragma")


class Statement(str):
    """One statement's text, carrying what DuckDB's parser said of it: parsed once
    (by ``Engine.split``, or by ``Engine.execute`` when given plain text) and passed on.
    ``kind``: its statement type (SELECT, CREATE, ...); ``params``: the named
    parameters it uses, lower-cased (None: it did not parse; its run will say why)."""

    kind: str = "SELECT"
    params: frozenset[str] | None = None

    @classmethod
    def parsed(cls, text: str, parse: Any | None) -> Statement:
        stmt = cls(text)
        if parse is not None:
            stmt.kind = str(parse.type).rsplit(".", 1)[-1]
            stmt.params = frozenset(n.lower() for n in parse.named_parameters)
        return stmt


@dataclass
class Result:
    statement: str
    data: ResultSet | None  # None for statements without a result (CREATE, SET, ...)
    warnings: list[str] = field(default_factory=list)
    collected: dict[str, int] = field(default_factory=dict)  # table -> rows loaded
    collect_seconds: float = 0.0
    run_seconds: float = 0.0


class Engine:
    """DuckDB plus the virtual tables. One engine per shell or command."""

    def __init__(self, tables: Sequence[Table] | None = None,
                 state: State | None = None,
                 setups: Sequence[Setup] | None = None) -> None:
        rewrite = tables is None
        if tables is None:
            from netsql.registry import default_tables

            tables = default_tables()
        if setups is None:
            from netsql.registry import default_setups

            setups = default_setups()
        self.tables: dict[str, Table] = {t.key: t for t in tables}
        #: Schemas on DuckDB's search_path besides main: their tables may be named
        #: without the schema (osquery mode, netsql/osquery/dialect.py, puts "osquery" there).
        self.search_schemas: set[str] = set()
        #: Rewrites each statement before it runs; None: statements run as written.
        #: (netsql/osquery/dialect.py: osquery's SQLite dialect and hidden columns.)
        #: The default engine's adds osquery's tables on their first mention.
        self.rewrite: Callable[[str], str] | None = None
        if rewrite:
            from netsql.registry import default_rewrite

            self.rewrite = default_rewrite(self)
        self.setups: list[Setup] = list(setups)
        self.state: State = state if state is not None else State()
        # DuckDB spills big queries to ./.tmp by default: never into the directory
        # a responder happens to stand in, nor without bound.
        self.con = duckdb.connect(":memory:", config=dbconfig.settings(
            temp_directory=spill_dir(), max_temp_directory_size="4GB"))
        self._created: set[str] = set()
        self._set_up: set[str] = set()
        self._pending: ResultSet | None = None  # the last result, maybe still streaming
        self._viewed: dict[str, Table] = {}  # tables served as views (netsql/load.py)
        #: DuckDB renders text (execute's ``render``) for results expected this long.
        self.render_rows = results.RENDER_ROWS
        if self.state.safe:  # --safe: SQL reaches netsql's tables and nothing else
            self.declare()  # intel's database is attached while files can still be opened
            self.con.execute(f"SET disabled_optimizers = '{_EXPLAIN_OFF}'")  # for needs()
            dbconfig.lock(self.con)

    def declare(self, sql: str | None = None) -> list[str]:
        """Create the stand-in DuckDB tables that ``sql`` might name (all when None),
        then run the setups it mentions; returns their warnings.

        Done lazily because each table's DDL and comments cost about 10 ms at start-up:
        a statement whose text does not contain a table's name cannot reference it
        (a view that does was created by a statement that did).
        """
        text = None if sql is None else plans.code_text(sql)
        if text is not None and any(w in text for w in _CATALOG_WORDS):
            text = None  # a catalog query (SHOW TABLES, duckdb_columns()): declare all
        for name, t in self.tables.items():
            if text is None or (t.name in text and (
                    not t.schema or t.schema in text or t.schema in self.search_schemas)):
                self._create(name)
        warnings: list[str] = []
        for s in self.setups:
            if s.name in self._set_up or (text is not None and
                                          not any(w in text for w in s.words)):
                continue
            for name in s.tables:
                self._create(name)
            try:
                warnings += s.run(self.con, self.state)
            except (NetsqlError, duckdb.Error) as exc:
                if text is not None:  # the statement needs it: fail with it
                    raise NetsqlError(str(exc).split("\n", 1)[0]) from None
                warnings.append(str(exc).split("\n", 1)[0])  # a catalog query goes on
                continue
            self._set_up.add(s.name)
        return warnings

    def _create(self, name: str) -> None:
        if name not in self._created and name in self.tables:
            t = self.tables[name]
            self.con.execute(";\n".join([t.ddl(), *t.comments()]))
            self._created.add(name)

    # -- statements -------------------------------------------------------------
    def split(self, sql: str) -> list[Statement]:
        """The statements of ``sql``, each parsed (a parse error is a NetsqlError)."""
        self.settle()
        if self.rewrite is not None:  # SQLite's syntax must be rewritten to parse at all
            sql = self.rewrite(sql)
        try:
            stmts = self.con.extract_statements(sql)
        except duckdb.Error as exc:
            raise plans.one_line(exc, sql, self.known_tables()) from None
        return [Statement.parsed(s.query.strip().rstrip(";").strip(), s) for s in stmts
                if s.query.strip(" ;\n\t")]

    def parse(self, stmt: str) -> Statement:
        """``stmt`` (one statement's text) rewritten (``rewrite``) and parsed; unparsable
        text is kept as it is, for its run to report."""
        if self.rewrite is not None:  # again: hidden columns are found one statement at a time
            text = self.rewrite(stmt)
            if text != stmt:  # parsed anew: the rewritten text is what runs
                stmt = text
        if isinstance(stmt, Statement):
            return stmt
        try:
            parse = self.con.extract_statements(stmt)[0]
        except (duckdb.Error, IndexError):
            parse = None
        return Statement.parsed(stmt, parse)

    def run(self, sql: str, params: Mapping[str, Any] | None = None,
            render: results.Render | None = None) -> Iterator[Result]:
        """Each statement of ``sql`` run in turn; an error's position is in ``sql``."""
        pos = 0
        for stmt in self.split(sql):
            start = sql.find(stmt, pos)
            pos = start + len(stmt) if start >= 0 else pos
            try:
                result = self.execute(stmt, params, render)
            except NetsqlError as exc:
                if start >= 0 and exc.statement == stmt:
                    exc.place(sql, start)
                raise
            yield result

    def settle(self) -> None:
        """Hold the rows of the last result if nobody read them yet, or end a result read
        in part: DuckDB's connection runs nothing else while a result streams."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.settle()

    def execute(self, stmt: str, params: Mapping[str, Any] | None = None,
                render: results.Render | None = None) -> Result:
        """Collect what one statement needs, then run it. Its rows stream as DuckDB
        produces them (``Result.data.chunks()``), until the engine runs anything else.
        ``render``, for a SELECT: asked for SQL that renders a row as text; when it gives
        one, DuckDB renders the rows (``Result.data.text``) instead of handing them over."""
        self.settle()
        self._restore()
        stmt = self.parse(stmt)
        args = _used_params(stmt, params)
        notes = self.declare(stmt)
        kind = stmt.kind
        t0 = time.perf_counter()
        needs = self.needs(stmt, args) if self._created else {}
        coll = Collection(state=self.state, tables=frozenset(needs))
        for note in notes:
            coll.warn(note)
        try:
            loaded = self.collect(needs, coll) if needs else {}
        except NetsqlError as exc:
            exc.statement = exc.statement or stmt
            raise
        t1 = time.perf_counter()

        def translate(exc: BaseException) -> NetsqlError:  # an error while rows stream
            return plans.one_line(exc, stmt, self.known_tables())

        try:
            data = None
            if render is not None and kind == "SELECT":
                data = results.rendered(self.con, stmt, args, render, translate,
                                        self.render_rows)
            if data is None:
                cur = self.con.execute(stmt, args) if args else self.con.execute(stmt)
                if kind in QUERY_TYPES and cur.description is not None:
                    cols = [d[0] for d in cur.description]
                    types = [str(d[1]) for d in cur.description]
                    data = ResultSet(cols, types, chunks=results.rows_of(cur, translate))
            self._pending = data
        except duckdb.InterruptException:
            raise Interrupted("interrupted") from None
        except RuntimeError as exc:
            # Ctrl-C while DuckDB runs: its check of Python's signals turns the
            # KeyboardInterrupt our handler raised into this.
            if "interrupted" in str(exc).lower():
                signals.reraise()
            raise
        except duckdb.Error as exc:
            error = plans.one_line(exc, stmt, self.known_tables())
            if error.message.startswith("no such table: "):
                error.message += _saved_query_hint(error.message[15:], self.state)
            raise error from None
        t2 = time.perf_counter()
        return Result(stmt, data, coll.warnings, loaded, t1 - t0, t2 - t1)

    def row_statements(self, sql: str) -> int:
        """How many statements of ``sql`` return rows (0 when it does not parse)."""
        try:
            return sum(s.kind in QUERY_TYPES for s in self.split(sql))
        except NetsqlError:
            return 0

    def interrupt(self) -> None:
        self.con.interrupt()

    # -- which tables a statement needs -------------------------------------------
    def needs(self, stmt: str, args: dict[str, Any] | None = None) -> dict[str, Need]:
        """Virtual tables the statement scans -> columns and pids it needs.

        DuckDB's own binder answers (through EXPLAIN), so USING/NATURAL joins,
        CTEs that shadow a table, views, quoted names and names inside string
        literals all come out right.
        """
        con = self.con
        locked = self.state.safe  # the optimizers stay off under --safe
        try:
            if not locked:
                con.execute(f"SET disabled_optimizers = '{_EXPLAIN_OFF}'")
            q = "EXPLAIN (FORMAT JSON) " + stmt
            rows = con.execute(q, args).fetchall() if args else con.execute(q).fetchall()
        except duckdb.Error:
            return self._needs_by_tokens(stmt)
        finally:
            if not locked:
                try:
                    con.execute("RESET disabled_optimizers")
                except duckdb.Error:  # an interrupt meant for the EXPLAIN landed here
                    con.execute("RESET disabled_optimizers")
        scans: dict[str, list[Need]] = {}
        for _, plan in rows:
            for node in plans.walk(plans.plan_json(plan)):
                info = node.get("extra_info")
                if not isinstance(info, dict) or "Table" not in info:
                    continue
                name = plans.table_key(str(info["Table"]))
                if name not in self.tables:
                    continue
                projections = plans.as_list(info.get("Projections"))
                filters = plans.as_list(info.get("Filters"))
                cols = frozenset(projections) | frozenset(
                    plans.filter_columns(filters, self.tables[name]))
                scans.setdefault(name, []).append(Need(cols, pids_from_filters(filters)))
        return {name: Need.merge(needs) for name, needs in scans.items()}

    def _needs_by_tokens(self, stmt: str) -> dict[str, Need]:
        """Fallback for statements EXPLAIN cannot take: every virtual table whose name
        appears as an identifier (in the statement or in any view), all columns."""
        texts = [stmt]
        try:
            texts += [r[0] for r in self.con.execute(
                "SELECT sql FROM duckdb_views() WHERE NOT internal").fetchall()]
        except duckdb.Error:
            pass
        found: dict[str, Need] = {}
        for text in texts:
            for name in plans.identifiers(text):
                if name in self.tables:
                    found[name] = Need()
        return found

    # -- collection ---------------------------------------------------------------
    def collect(self, needs: Mapping[str, Need], coll: Collection) -> dict[str, int]:
        """Collect every needed table in one pass and load it into DuckDB.

        The cyclic garbage collector pauses meanwhile: a pass makes tens of thousands of
        lists and tuples and no cycles, and collections triggered by their numbers cost
        a third of the pass (25,000 sockets: 40 ms of CPU to parse with it, 26 without).
        """
        loaded = {}
        cancel = self.state.cancel
        collecting = gc.isenabled()
        gc.disable()
        try:
            for name, need in needs.items():
                if cancel is not None and cancel.is_set():
                    raise Interrupted("interrupted")
                table = self.tables[name]
                scope = self.state.scope  # netsql serve: a client of another namespace
                data = table.collect(coll, need) if scope is None else scope.collect(
                    table, coll, need)
                loaded[name] = self.load(table, data, need.columns)
        finally:
            if collecting:
                gc.enable()
        return loaded

    def load(self, table: Table, data: Mapping[str, list[Any]],
             columns: frozenset[str] | None = None) -> int:
        """Replace ``table``'s rows with ``data`` (see netsql/load.py)."""
        from netsql.load import as_view, load

        if as_view(data):  # before: a signal may stop the swap half-way
            self._viewed[table.key] = table
        try:
            return load(self.con, table, data, columns)
        except duckdb.InterruptException:
            raise Interrupted("interrupted") from None
        except (duckdb.Error, ValueError, OverflowError) as exc:  # a collector's value
            # DuckDB or Arrow refused (never expected: one line, not a traceback)
            first = str(exc).split("\n", 1)[0]
            raise NetsqlError(f"{table.key}: its rows could not be loaded: {first}") from None

    def _restore(self) -> None:
        """The tables the last statement was served as views (netsql/load.py) made
        empty tables again, before this statement is looked at."""
        if not self._viewed:
            return
        from netsql.load import restore

        viewed, self._viewed = self._viewed, {}
        for table in viewed.values():
            restore(self.con, table)

    def known_tables(self) -> list[str]:
        names = set(self.tables)
        try:
            names.update(r[0] for r in self.con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE NOT internal "
                "UNION SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall())
        except duckdb.Error:
            pass
        return sorted(names)


def _used_params(stmt: Statement, params: Mapping[str, Any] | None
                 ) -> dict[str, Any] | None:
    """The named parameters ``stmt`` uses: DuckDB rejects values a statement does not
    name, and each statement of a saved query uses only some of its parameters."""
    if not params:
        return None
    if stmt.params is None:
        return dict(params)  # the statement's own error will say what is wrong
    return {k: v for k, v in params.items() if k.lower() in stmt.params} or None


def _saved_query_hint(name: str, state: State) -> str:
    """When an unknown table is a saved query's name (FROM connections)."""
    from netsql.queries import QueryUsageError, load_queries

    try:
        names = {q.name for q in load_queries(state.query_dirs)}
    except QueryUsageError:
        return ""
    if name.strip('"') not in names:
        return ""
    name = name.strip('"')
    return (f"; {name} is a saved query: run it with netsql -q {name} (.run {name} in "
            "the shell)")
