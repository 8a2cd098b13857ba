"""Running the watched statements once per refresh, through one Engine.

The sources are what the CLI runs: ``(origin, sql, params)`` triples from ``-e``,
``-f``, ``-q`` (a saved query with its ``-p`` values) or standard input. On the first
refresh every statement runs in order; a statement that returns no rows (``CREATE
VIEW``, ``SET``, a macro) is setup and does not run again. Every statement that returns
rows runs on every refresh, against the same DuckDB connection and the same
``engine.state`` (so collectors may keep caches between refreshes).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb

from netsql.errors import NetsqlError

if TYPE_CHECKING:
    from netsql.context import Env
    from netsql.engine import Engine
    from netsql.formats.base import ResultSet

Source = tuple[str, str, Mapping[str, Any] | None]  # (origin, SQL text, parameters)


class NothingToWatch(NetsqlError):
    """The sources hold no statement that returns rows."""


@dataclass
class Snapshot:
    """One statement's rows at one refresh."""

    index: int  # 1-based, among the statements that return rows
    origin: str
    statement: str
    data: ResultSet


@dataclass
class Refresh:
    number: int  # 1 for the first
    wall: dt.datetime  # when it started (UTC, aware)
    at: float  # the same moment on the monotonic clock
    seconds: float = 0.0  # how long it took
    snapshots: list[Snapshot] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # first seen in this refresh
    error: NetsqlError | None = None  # a later refresh that failed (the watch goes on)

    @property
    def stamp(self) -> str:
        """ISO 8601 UTC with milliseconds, e.g. ``2026-01-02T03:04:05.678Z``."""
        return self.wall.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.wall.microsecond // 1000:03d}Z"


@contextlib.contextmanager
def one_thread(engine: Engine) -> Iterator[None]:
    """DuckDB on one thread while a watch runs: its refreshes are small (tens of
    thousands of rows), where a second thread costs more CPU than it saves time (loading
    25,000 sockets: 20 ms of CPU on one thread, 30 ms on two). Restored afterwards."""
    row = engine.con.execute("SELECT current_setting('threads')").fetchone()
    try:
        engine.con.execute("SET threads = 1")
    except duckdb.InvalidInputException:  # --safe locked the configuration
        row = None
    try:
        yield
    finally:
        if row is not None:
            engine.con.execute(f"SET threads = {int(row[0])}")


class Watch:
    """The statements of a watch and the engine they run in."""

    def __init__(self, engine: Engine, sources: Sequence[Source]) -> None:
        self.engine = engine
        self.sources = list(sources)
        self.plan: list[tuple[str, str, Mapping[str, Any] | None]] | None = None
        self.count = 0
        self._seen: set[str] = set()

    def refresh(self) -> Refresh:
        """Run the statements once. The first refresh raises its errors (a statement
        that cannot run is a usage problem); later ones record them in ``error``."""
        self.count += 1
        now = Refresh(self.count, dt.datetime.now(dt.UTC), time.monotonic())
        try:
            if self.plan is None:
                self._first(now)
            else:
                for i, (origin, stmt, params) in enumerate(self.plan, 1):
                    result = self.engine.execute(stmt, params)
                    self._note(now, result.warnings)
                    if result.data is not None:
                        now.snapshots.append(Snapshot(i, origin, stmt, result.data))
        except NetsqlError as exc:
            if self.plan is None:
                raise
            now.error = exc
        now.seconds = time.monotonic() - now.at
        return now

    def _first(self, now: Refresh) -> None:
        plan: list[tuple[str, str, Mapping[str, Any] | None]] = []
        for origin, text, params in self.sources:
            for stmt in self.engine.split(text):
                try:
                    result = self.engine.execute(stmt, params)
                except NetsqlError as exc:
                    if origin not in ("sql", "stdin"):  # as the CLI names a failing file
                        exc.message = f"{origin}: {exc.message}"
                    raise
                self._note(now, result.warnings)
                if result.data is not None:
                    plan.append((origin, stmt, params))
                    now.snapshots.append(Snapshot(len(plan), origin, stmt, result.data))
        if not plan:
            raise NothingToWatch("nothing to watch: no statement returns rows")
        self.plan = plan

    def _note(self, now: Refresh, warnings: Sequence[str]) -> None:
        for w in warnings:
            if w not in self._seen:
                self._seen.add(w)
                now.warnings.append(w)

    def first(self, env: Env) -> Refresh | int:
        """The first refresh, or the exit status after its one-line error: 2 when no
        statement returns rows, 1 when one fails (later refreshes report and go on)."""
        from netsql.context import ExitStatus

        try:
            return self.refresh()
        except NothingToWatch as exc:
            env.error(str(exc))
            return ExitStatus.USAGE
        except NetsqlError as exc:
            env.error(str(exc))
            return ExitStatus.ERROR

    def interrupt(self) -> None:
        """Stop a refresh running in another thread (its collection and its query); the
        caller clears ``engine.state.cancel`` once that thread has ended."""
        cancel = self.engine.state.cancel
        if cancel is not None:
            cancel.set()
        self.engine.interrupt()
