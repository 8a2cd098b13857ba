"""Row identity, differences between two refreshes, and per-second rates. Pure functions.

A refresh's rows are matched with the previous refresh's rows by an *identity*: the
values of the row's key columns. Every column has one of three roles, decided from its
name and DuckDB type alone (so the same statement always gets the same roles):

* ``counter``: a number that only grows while the row lives (bytes, packets,
  segments, retransmits, messages, drops...). In delta mode it shows per-second rates.
  Numeric columns whose name has a word such as ``bytes``, ``packets``, ``pkts``,
  ``segs``, ``octets``, ``sent``, ``received``, ``recv``, ``retrans``, ``drops``,
  ``dropped``, ``errors``, ``evicted``, ``messages``, ``count``, ``acked``, or that start with
  ``rx_``/``tx_``.
* ``gauge``: a number that goes up and down (queues, memory, threads, round-trip
  times, percentages, ages): numeric columns whose name has a word such as ``queue``,
  ``rss``, ``threads``, ``rtt``, ``cwnd``, ``percent``, ``ratio``, ``rate``, ``cpu``,
  ``age``, ``ago``, ``seconds``, ``ms``, ``last``, ``n``, ``total``; also every
  floating-point, DECIMAL and INTERVAL column that is not a counter, and TIMESTAMP
  columns named ``last...``. Shown as they are.
* ``key``: everything else: text, booleans, lists, timestamps and integers such as
  ``pid``, ``fd``, ``local_port``, ``uid``, ``inode``.

Counters and gauges are *measures*: a row whose measures change is the same row (its
counters give rates); a row whose key columns change is a removed row and an added
row, as in osquery's differential results. Rows with equal keys (two UDP sockets alike
in every key column) are matched in order.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

KEY, COUNTER, GAUGE = "key", "counter", "gauge"

NEW, SAME, GONE = "new", "same", "gone"

COUNTER_WORDS = frozenset({
    "bytes", "packets", "pkts", "segs", "segments", "octets", "sent", "received", "recv",
    "retrans", "retransmits", "retransmitted", "drops", "dropped", "errors", "evicted",
    "messages", "count", "acked",
})
GAUGE_WORDS = frozenset({
    "queue", "rss", "vms", "memory", "mem", "threads", "rtt", "rttvar", "cwnd",
    "ssthresh", "mss", "window", "wnd", "percent", "pct", "ratio", "rate", "cpu", "load",
    "age", "ago", "uptime", "elapsed", "duration", "seconds", "ms", "us", "delay",
    "latency", "jitter", "inflight", "unacked", "backlog", "last", "buffered", "held",
    "n", "num", "total", "size",
})
_INT_TYPE = re.compile(r"(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?|INT[1248]|LONG|SHORT)",
                       re.IGNORECASE)
_FLOAT_TYPE = re.compile(r"(FLOAT[48]?|DOUBLE|REAL|DECIMAL|NUMERIC)(\(\d+(,\s*\d+)?\))?",
                         re.IGNORECASE)
_NESTED_TYPE = re.compile(r".*(\[\d*\])$|(STRUCT|MAP|UNION)\(.*", re.IGNORECASE | re.DOTALL)


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]


def column_role(name: str, type_name: str) -> str:
    """``counter``, ``gauge`` or ``key`` for a column (see the module docstring)."""
    t = type_name.strip()
    words = _words(name)
    integer = bool(_INT_TYPE.fullmatch(t))
    floating = bool(_FLOAT_TYPE.fullmatch(t))
    if integer or floating:
        if any(w in GAUGE_WORDS for w in words):
            return GAUGE
        if any(w in COUNTER_WORDS for w in words) or (
                len(words) > 1 and words[0] in ("rx", "tx")):
            return COUNTER
        return GAUGE if floating else KEY
    if t.upper() == "INTERVAL":
        return GAUGE
    if t.upper().startswith("TIMESTAMP") and words[:1] == ["last"]:
        return GAUGE
    return KEY


def freeze(value: Any) -> Any:
    """A hashable stand-in for a LIST, STRUCT or MAP value."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, freeze(v)) for k, v in value.items())
    return value


@dataclass(frozen=True)
class Shape:
    """The columns of a result and the role of each."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    roles: tuple[str, ...]
    #: Columns that identify a row (all columns when every one is a measure and
    #: ``whole_row`` was asked for).
    key: tuple[int, ...]
    nested: tuple[int, ...] = ()  # key columns holding unhashable values

    @classmethod
    def of(cls, columns: Sequence[str], types: Sequence[str], *,
           whole_row: bool = False) -> Shape:
        """Roles from names and types. ``whole_row``: with no key column, identify rows by
        every column (``--changes``); else rows without keys are matched by position."""
        types = list(types) + [""] * (len(columns) - len(types))
        roles = tuple(column_role(c, t) for c, t in zip(columns, types, strict=True))
        key = tuple(i for i, r in enumerate(roles) if r == KEY)
        if not key and whole_row:
            key = tuple(range(len(columns)))
        nested = tuple(i for i in key if _NESTED_TYPE.fullmatch(types[i].strip()))
        return cls(tuple(columns), tuple(types), roles, key, nested)

    @property
    def counters(self) -> tuple[int, ...]:
        return tuple(i for i, r in enumerate(self.roles) if r == COUNTER)

    def key_of(self, row: Sequence[Any]) -> tuple[Any, ...]:
        if self.nested:
            return tuple(freeze(row[i]) if i in self.nested else row[i] for i in self.key)
        return tuple(row[i] for i in self.key)

    def identity(self) -> Callable[[Sequence[Any]], Hashable]:
        """A fast function giving each row's identity (equal for equal ``key_of``)."""
        if self.nested:
            return self.key_of
        if not self.key:
            return lambda row: ()
        return operator.itemgetter(*self.key)


@dataclass(slots=True)
class Entry:
    """One row of a refresh as a live view shows it."""

    values: tuple[Any, ...]
    status: str  # NEW, SAME or GONE
    before: tuple[Any, ...] | None = None  # the matched row of the previous refresh


@dataclass
class Change:
    """One refresh compared with the previous one.

    ``entries``: the current rows in result order (``new`` or ``same``), then the rows
    that went away (``gone``), in their previous order. ``seconds``: time since the
    previous refresh (None for the first).
    """

    shape: Shape
    entries: list[Entry] = field(default_factory=list)
    seconds: float | None = None

    @property
    def added(self) -> list[tuple[Any, ...]]:
        return [e.values for e in self.entries if e.status == NEW]

    @property
    def removed(self) -> list[tuple[Any, ...]]:
        return [e.values for e in self.entries if e.status == GONE]

    @property
    def current(self) -> list[tuple[Any, ...]]:
        return [e.values for e in self.entries if e.status != GONE]


def compare(shape: Shape, old: Iterable[Sequence[Any]] | None,
            new: Iterable[Sequence[Any]], seconds: float | None = None) -> Change:
    """Match ``new`` rows with ``old`` ones by identity (``old`` None: a first refresh,
    every row new)."""
    change = Change(shape, seconds=seconds)
    entries = change.entries
    if old is None:
        entries.extend(Entry(_tuple(r), NEW) for r in new)
        return change
    # Identity -> the previous rows with it, last first (rows with equal identities are
    # matched in order: the first new one with the first old one).
    pool: dict[Hashable, list[tuple[Any, ...]]] = {}
    identity = shape.identity()
    for r in old:
        rows = pool.get(k := identity(r))
        if rows is None:
            pool[k] = [_tuple(r)]
        else:
            rows.append(_tuple(r))
    for rows in pool.values():
        if len(rows) > 1:
            rows.reverse()
    append = entries.append
    for r in new:
        rows = pool.get(identity(r))
        if rows:
            append(Entry(_tuple(r), SAME, rows.pop()))
        else:
            append(Entry(_tuple(r), NEW))
    for rows in pool.values():
        entries.extend(Entry(r, GONE) for r in reversed(rows))
    return change


def _tuple(row: Sequence[Any]) -> tuple[Any, ...]:
    return row if type(row) is tuple else tuple(row)


class Differ:
    """Feeds consecutive results of one statement to :func:`compare`."""

    def __init__(self, *, whole_row: bool = False) -> None:
        self.whole_row = whole_row
        self.shape: Shape | None = None
        self.rows: list[tuple[Any, ...]] | None = None
        self.at: float | None = None
        self._row_set: set[tuple[Any, ...]] | None = None  # rows as a set (changes())

    def update(self, columns: Sequence[str], types: Sequence[str],
               rows: Sequence[Sequence[Any]], at: float) -> Change:
        """The change since the previous call; ``at``: when the rows were read (seconds,
        monotonic). A result with other columns than before starts afresh."""
        shape = Shape.of(columns, types, whole_row=self.whole_row)
        old = self.rows
        if self.shape is not None and (shape.columns, shape.types) != (
                self.shape.columns, self.shape.types):
            old = None
        seconds = None if self.at is None or old is None else at - self.at
        change = compare(shape, old, rows, seconds)
        self.shape, self.rows, self.at = shape, change.current, at
        self._row_set = None
        return change


    def changes(self, columns: Sequence[str], types: Sequence[str],
                rows: Sequence[Sequence[Any]], at: float
                ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """(added, removed) since the previous call, whole rows compared (a
        ``whole_row`` Differ): as ``update`` gives them, but when no row repeats and
        every value hashes, by set difference, without an Entry per row (a 1 s watch
        of 10,000 rows spends its time here otherwise)."""
        old = self.rows
        shape = Shape.of(columns, types, whole_row=self.whole_row)
        if (self.whole_row and old is not None and self.shape is not None
                and (shape.columns, shape.types) == (self.shape.columns, self.shape.types)):
            new = [_tuple(r) for r in rows]
            if new == old:  # nothing changed, rows in the same order: no hashing
                self.at = at
                return [], []
            try:
                old_set = self._row_set if self._row_set is not None else set(old)
                new_set = set(new)
            except TypeError:  # a LIST or STRUCT value: compare() freezes those
                old_set = new_set = set()
            if len(old_set) == len(old) and len(new_set) == len(new) and (old or new):
                gained, lost = new_set - old_set, old_set - new_set
                self.rows, self.at, self._row_set = new, at, new_set
                return ([r for r in new if r in gained] if gained else [],
                        [r for r in old if r in lost] if lost else [])
        change = self.update(columns, types, rows, at)
        return change.added, change.removed


def rate(old: Any, new: Any, seconds: float | None) -> float | None:
    """Per-second growth of a counter; None when unknown (a new row, a NULL, a counter
    that went down: reset or wrapped)."""
    if seconds is None or seconds <= 0 or old is None or new is None:
        return None
    if isinstance(old, bool) or isinstance(new, bool):
        return None
    if not isinstance(old, int | float | Decimal) or not isinstance(new, int | float | Decimal):
        return None
    grown = float(new) - float(old)
    if grown < 0:
        return None
    return grown / seconds


def is_numeric(type_name: str) -> bool:
    """A DuckDB integer, floating-point or DECIMAL type (right-aligned, sorted largest
    first)."""
    t = type_name.strip()
    return bool(_INT_TYPE.fullmatch(t) or _FLOAT_TYPE.fullmatch(t))
