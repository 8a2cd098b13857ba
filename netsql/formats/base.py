"""What every output format receives: a result and where/how to write it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from netsql.context import stderr_notice

Row = tuple[Any, ...]


class ResultSet:
    """One statement's result: column names, DuckDB type names, and its rows.

    The rows are either held (``rows``, a sequence) or streamed: ``chunks`` yields them a
    chunk at a time as DuckDB produces them, once. Formats read ``chunks()``, so a
    streamed result is written in bounded memory; reading ``rows`` holds what is left.
    ``text``, when set, streams the rows already rendered by DuckDB as UTF-8 bytes (a
    format asked for them through :func:`netsql.formats.sqlrow.row_sql`); such a result
    has no Python rows.
    """

    def __init__(self, columns: Sequence[str], types: Sequence[str],
                 rows: Sequence[Row] | None = None, *,
                 chunks: Iterable[Sequence[Row]] | None = None,
                 text: Iterator[bytes] | None = None) -> None:
        self.columns = list(columns)
        self.types = list(types)
        self._rows = rows if rows is not None or chunks is not None or text is not None \
            else []
        self._chunks: Iterator[Sequence[Row]] | None = (
            iter(chunks) if chunks is not None and rows is None else None)
        self.text = text
        self.count = 0  # rows handed out by chunks() so far
        self._started = False

    def __repr__(self) -> str:
        held = "streamed" if self._rows is None else f"{len(self._rows)} rows"
        return f"ResultSet({self.columns!r}, {self.types!r}, {held})"

    @property
    def streaming(self) -> bool:
        """Whether rows are still to come from DuckDB (not held)."""
        return self._rows is None

    @property
    def rows(self) -> Sequence[Row]:
        """Every row, held (a streamed result is read to its end first)."""
        if self._rows is None:
            self._rows = [r for chunk in self.chunks() for r in chunk]
        return self._rows

    def chunks(self) -> Iterator[Sequence[Row]]:
        """The rows, a chunk at a time (held rows: one chunk)."""
        if self._rows is not None:
            if self._rows:
                self.count = len(self._rows)
                yield self._rows
            return
        source = self._chunks
        if source is None or self._started:
            return
        self._started = True
        for chunk in source:
            self.count += len(chunk)
            yield chunk

    def settle(self) -> None:
        """Before its connection runs anything else: hold the rows of a result nobody
        read yet; end one that was read in part (its reader is done with it)."""
        if self._rows is None and not self._started and self.text is None:
            self.rows  # noqa: B018  (holds them)
            return
        for it in (self._chunks, self.text):
            close = getattr(it, "close", None)
            if close is not None:
                close()


@dataclass
class OutputContext:
    """Where output goes. ``tty``: stdout is a terminal (escape control characters,
    fit ``width``); ``notice`` writes one line to stderr (e.g. "3 values cut to fit");
    ``whole_values``: how the user asks for uncut values, as notices name it (the shell
    says ``.mode line``).
    ``maxrows``: the table format shows at most this many rows, the first and the last
    halves, with the row count (0: every row)."""

    tty: bool = False
    width: int = 80
    header: bool = True
    notice: Callable[[str], None] = field(default=stderr_notice)
    whole_values: str = "--format line"
    maxrows: int = 0


class Formatter(Protocol):
    name: str
    description: str

    def write(self, result: ResultSet, out: TextIO, ctx: OutputContext) -> None: ...
