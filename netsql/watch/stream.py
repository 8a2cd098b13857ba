"""The watch off a terminal: every refresh written to standard output, for pipelines.

* ``jsonl``: one object per row, with ``"refresh"``: the refresh's start as ISO 8601
  UTC (``2026-01-02T03:04:05.678Z``); with ``--changes`` also ``"action"``:
  ``"added"`` or ``"removed"`` (osqueryd's differential results). With more than one
  statement that returns rows, ``"statement"``: its number (1-based). These fields come
  first; a column with the same name is renamed (``refresh_1``).
* ``json``: one array of such objects per refresh (``jq`` reads the arrays as a stream).
* ``csv``: the same fields as columns; the header row once (again when the columns
  change, as when several statements are watched).
* ``table``, ``line``, ``markdown``: a ``-- refresh TIME`` line, then the rows as the
  format shows them (``action`` as the first column with ``--changes``).

A refresh with nothing to write writes nothing. Output is flushed after every refresh.
SIGINT, SIGTERM and SIGHUP end the watch after the refresh being written (never in the
middle of a row), with exit status 0: ending is the normal way a watch ends.
"""

from __future__ import annotations

import io
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from netsql.formats import get_formatter
from netsql.formats.base import OutputContext, ResultSet
from netsql.formats.data import json_value, unique_keys
from netsql.watch.diff import Differ

if TYPE_CHECKING:
    from netsql.context import Env
    from netsql.watch.runner import Refresh, Watch



class _Stop(BaseException):
    """Raised by the signal handler outside the write section."""


class Stopper:
    """SIGINT/SIGTERM/SIGHUP end the loop: at once while refreshing or sleeping, after
    the write while writing (so a row is never cut and the output is flushed)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.requested = False
        self.writing = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if not self.writing:
            raise _Stop

    def __enter__(self) -> Stopper:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)

    @contextmanager
    def write_section(self) -> Iterator[None]:
        self.writing = True
        try:
            yield
        finally:
            self.writing = False
        if self.requested:
            raise _Stop


class Writer:
    """Turns refreshes into text in one format."""

    def __init__(self, fmt: str, *, changes: bool, header: bool, tty: bool, width: int,
                 notice: Callable[[str], None] | None = None) -> None:
        self.fmt = fmt
        self.changes = changes
        self.header = header
        self.ctx = OutputContext(tty=tty, width=width if tty else 0, header=header,
                                 notice=notice or (lambda message: None))
        self.differs: dict[int, Differ] = {}
        self.multi = False
        self._csv_columns: list[str] | None = None
        self._printed = 0

    def rows(self, refresh: Refresh) -> Iterator[tuple[int, ResultSet, list[str],
                                                     list[tuple[Any, ...]]]]:
        """Per statement: its result, the actions of the rows to write, the rows."""
        for snap in refresh.snapshots:
            data = snap.data
            if not self.changes:
                yield snap.index, data, [], list(data.rows)
                continue
            differ = self.differs.setdefault(snap.index, Differ(whole_row=True))
            added, removed = differ.changes(data.columns, data.types, data.rows, refresh.at)
            yield (snap.index, data, ["added"] * len(added) + ["removed"] * len(removed),
                   added + removed)

    def render(self, refresh: Refresh) -> str:
        self.multi = self.multi or len(refresh.snapshots) > 1
        out = io.StringIO()
        for index, data, actions, rows in self.rows(refresh):
            if not rows:
                continue
            meta = ["refresh"] + (["action"] if self.changes else []) + (
                ["statement"] if self.multi else [])

            def meta_values(i: int, index: int = index, actions: list[str] = actions
                            ) -> list[Any]:
                return [refresh.stamp] + ([actions[i]] if self.changes else []) + (
                    [index] if self.multi else [])

            if self.fmt in ("jsonl", "json"):
                self._json(out, meta, data.columns, rows, meta_values)
            elif self.fmt == "csv":
                self._csv(out, meta, data, rows, meta_values)
            else:
                self._human(out, refresh, index, data, rows, actions)
        return out.getvalue()

    def _json(self, out: TextIO, meta: list[str], columns: list[str],
              rows: list[tuple[Any, ...]], meta_values: Any) -> None:
        keys = unique_keys(meta + list(columns))
        prefixes = [json_value(k) + ": " for k in keys]
        objs = ("{" + ", ".join(p + json_value(v) for p, v in zip(
            prefixes, meta_values(i) + list(row), strict=True)) + "}"
            for i, row in enumerate(rows))
        if self.fmt == "jsonl":
            for obj in objs:
                out.write(obj + "\n")
        else:
            out.write("[\n" + ",\n".join(objs) + "\n]\n")

    def _csv(self, out: TextIO, meta: list[str], data: ResultSet,
             rows: list[tuple[Any, ...]], meta_values: Any) -> None:
        columns = meta + list(data.columns)
        header = self.header and columns != self._csv_columns
        self._csv_columns = columns
        rs = ResultSet(columns, ["VARCHAR"] * len(meta) + list(data.types),
                       [tuple(meta_values(i)) + tuple(row) for i, row in enumerate(rows)])
        ctx = OutputContext(tty=self.ctx.tty, width=0, header=header,
                            notice=self.ctx.notice)
        get_formatter("csv").write(rs, out, ctx)

    def _human(self, out: TextIO, refresh: Refresh, index: int, data: ResultSet,
               rows: list[tuple[Any, ...]], actions: list[str]) -> None:
        if self._printed:
            out.write("\n")
        self._printed += 1
        which = f", statement {index}" if self.multi else ""
        out.write(f"-- refresh {refresh.stamp}{which}\n")
        columns, types = list(data.columns), list(data.types)
        if self.changes:
            columns, types = ["action", *columns], ["VARCHAR", *types]
            rows = [(a, *row) for a, row in zip(actions, rows, strict=True)]
        get_formatter(self.fmt).write(ResultSet(columns, types, rows), out, self.ctx)


def next_tick(start: float, interval: float, now: float) -> float:
    """When the next refresh starts: on the grid ``start + k * interval`` (a fixed rate,
    so timestamps and rates stay regular), the first point after ``now``; a refresh that
    overran skips the ticks it missed rather than running back to back."""
    k = max(int((now - start) // interval) + 1, 1)
    return start + k * interval


def run_stream(watch: Watch, env: Env, *, fmt: str, interval: float, changes: bool,
               header: bool = True) -> int:
    """Refresh and write until a signal ends the watch; the exit status.

    A first refresh that fails ends the watch with its error (status 1; 2 when there is
    nothing to watch); a later one is reported on standard error and the watch goes on.
    """
    from netsql.context import ExitStatus

    noticed: set[str] = set()

    def notice(message: str) -> None:  # "columns cut to fit": once, not every refresh
        if message not in noticed:
            noticed.add(message)
            env.notice(message)

    writer = Writer(fmt, changes=changes, header=header, tty=bool(env.stdout_isatty),
                    width=env.width or 100, notice=notice)
    last_error = ""
    with Stopper() as stopper:
        try:
            first = watch.first(env)
            if isinstance(first, int):
                return first
            refresh = first
            start = refresh.at
            while True:
                for w in refresh.warnings:
                    env.warn(w)
                if refresh.error is not None:
                    if str(refresh.error) != last_error:
                        env.error(f"refresh {refresh.number}: {refresh.error}")
                    last_error = str(refresh.error)
                else:
                    last_error = ""
                    text = writer.render(refresh)
                    with stopper.write_section():
                        if text:
                            env.stdout.write(text)
                        env.stdout.flush()
                start = next_tick(start, interval, time.monotonic())
                time.sleep(max(start - time.monotonic(), 0.0))
                refresh = watch.refresh()
        except _Stop:
            pass
        finally:
            try:
                env.stdout.flush()
            except (OSError, ValueError):
                pass
    return ExitStatus.SUCCESS
