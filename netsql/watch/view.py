"""What the full-screen watch shows, as plain data: no prompt_toolkit here, so tests
check the screen's content directly and :mod:`netsql.watch.screen` only draws it.

A screen is a list of lines; a line is a list of ``(style, text)`` fragments, the
styles being ``class:`` names that the screen maps to colours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from netsql.formats.text import cell_text, fit_widths, pad, text_width, truncate
from netsql.watch.diff import (
    GONE,
    KEY,
    NEW,
    SAME,
    Change,
    Differ,
    Entry,
    is_numeric,
    rate,
)
from netsql.watch.runner import Refresh

Line = list[tuple[str, str]]
GUTTER = {NEW: "+ ", GONE: "- ", SAME: "  "}
ROW_STYLE = {NEW: "class:new", GONE: "class:gone", SAME: ""}
SEP = "  "
KEYS = ("q quit  p pause  d delta  < > sort  r reverse  space refresh  "
        "↑↓ PgUp PgDn scroll")


def rate_text(value: float | None) -> str:
    """A per-second rate, short: 0, 12.5, 980, 1.2k, 34M."""
    if value is None:
        return ""
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            scaled = value / limit
            return f"{scaled:.1f}{suffix}" if scaled < 100 else f"{scaled:.0f}{suffix}"
    if value == int(value):
        return str(int(value))
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def column_rates(entries: Sequence[Entry], i: int, seconds: float | None
                 ) -> list[float | None]:
    """Per-second rates of counter column ``i``, one per entry (None: unknown)."""
    out: list[float | None] = []
    append = out.append
    for e in entries:
        before = e.before
        if before is None or e.status != SAME:
            append(None)
            continue
        old, new = before[i], e.values[i]
        if type(old) is int and type(new) is int and seconds and seconds > 0:
            append((new - old) / seconds if new >= old else None)
        else:
            append(rate(old, new, seconds))
    return out


def _widest(values: Sequence[Any]) -> int:
    """The widest cell of a column, without making every cell's text when the values are
    plain ASCII text or integers."""
    kinds = set(map(type, values))
    nulls = type(None) in kinds
    kinds.discard(type(None))
    present = [v for v in values if v is not None] if nulls else values
    widest = 4 if nulls else 0  # NULL
    if not present:
        return widest
    if kinds == {str}:
        joined = "".join(present)
        if joined.isascii() and joined.isprintable():
            return max(widest, max(map(len, present)))
    elif kinds == {int}:
        return max(widest, len(str(max(present))), len(str(min(present))))
    return max(widest, max(text_width(cell_text(v)) for v in present))


def _sort_key(v: Any) -> tuple[int, float, str]:
    if isinstance(v, bool):
        return (0, float(v), "")
    if isinstance(v, int | float | Decimal):
        return (0, float(v), "")
    return (1, 0.0, cell_text(v))


@dataclass
class Pane:
    """One watched statement's latest change and how it is laid out."""

    index: int
    origin: str
    change: Change
    rows: list[Entry] = field(default_factory=list)  # in display order
    order: list[int] = field(default_factory=list)  # their positions in change.entries
    rates: dict[int, list[float | None]] = field(default_factory=dict)  # delta: by column
    texts: dict[int, list[str]] = field(default_factory=dict)  # by row position, drawn
    widths: list[int] = field(default_factory=list)  # natural widths
    headers: list[str] = field(default_factory=list)
    ready: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        return self.change.shape.columns


class View:
    def __init__(self, title: str, interval: float) -> None:
        self.title = title
        self.interval = interval
        self.delta = False
        self.paused = False
        self.sort: str | None = None  # a column of the focused pane
        self.descending = False
        self.focus = 0
        self.scroll = 0
        self.panes: list[Pane] = []
        self.differs: dict[int, Differ] = {}
        self.refresh: Refresh | None = None
        self.error = ""
        self.warnings: list[str] = []
        self.body_height = 10  # rows of the scrolling part at the last render

    # -- state changes -------------------------------------------------------------
    def update(self, refresh: Refresh) -> None:
        """Take a refresh: mark new rows, keep the rows that went away for this one
        refresh (marked), work out rates."""
        self.warnings = (self.warnings + refresh.warnings)[-3:]
        if refresh.error is not None:
            self.error = f"refresh {refresh.number} failed: {refresh.error}"
            return
        self.error = ""
        self.refresh = refresh
        panes = []
        for snap in refresh.snapshots:
            differ = self.differs.setdefault(snap.index, Differ())
            first = differ.rows is None
            change = differ.update(snap.data.columns, snap.data.types, snap.data.rows,
                                   refresh.at)
            if first:  # nothing is new on the first screen
                for e in change.entries:
                    e.status = SAME
            panes.append(Pane(snap.index, snap.origin, change))
        self.panes = panes
        self.focus = min(self.focus, max(len(panes) - 1, 0))

    def toggle_delta(self) -> None:
        self.delta = not self.delta
        self._invalidate()

    def toggle_pause(self) -> None:
        self.paused = not self.paused

    def cycle_sort(self, step: int) -> None:
        """Next (+1) or previous (-1) sort column; before the first: the query's order."""
        if not self.panes:
            return
        pane = self.panes[self.focus]
        names: list[str | None] = [None, *pane.columns]
        at = names.index(self.sort) if self.sort in names else 0
        self.sort = names[(at + step) % len(names)]
        if self.sort is not None:
            i = pane.columns.index(self.sort)
            self.descending = is_numeric(pane.change.shape.types[i])
        self._invalidate()

    def reverse(self) -> None:
        self.descending = not self.descending
        self._invalidate()

    def next_pane(self) -> None:
        if len(self.panes) > 1:
            self.focus = (self.focus + 1) % len(self.panes)
            self.sort = None
            self._invalidate()

    def scroll_by(self, lines: int) -> None:
        self.scroll = max(self.scroll + lines, 0)

    def page(self, pages: int) -> None:
        self.scroll_by(pages * max(self.body_height - 1, 1))

    def _invalidate(self) -> None:
        for p in self.panes:
            p.ready = False

    # -- layout ----------------------------------------------------------------------
    def _prepare(self, pane: Pane, focused: bool) -> None:
        shape, change = pane.change.shape, pane.change
        entries = change.entries
        rates: dict[int, list[float | None]] = {}
        if self.delta:
            rates = {i: column_rates(entries, i, change.seconds) for i in shape.counters}
        order = list(range(len(entries)))
        if focused and self.sort in shape.columns:
            i = shape.columns.index(self.sort)
            values: Sequence[Any] = rates[i] if i in rates else [e.values[i] for e in entries]
            present = [n for n in order if values[n] is not None]
            present.sort(key=lambda n: _sort_key(values[n]), reverse=self.descending)
            order = present + [n for n in order if values[n] is None]
        headers = []
        for i, name in enumerate(shape.columns):
            h = cell_text(name)
            if i in rates:
                h += "/s"
            if focused and name == self.sort:
                h += " ▼" if self.descending else " ▲"
            headers.append(h)
        pane.rows = [entries[n] for n in order]
        pane.order, pane.rates, pane.texts, pane.headers = order, rates, {}, headers
        pane.widths = self._widths(pane)
        pane.ready = True

    def _widths(self, pane: Pane) -> list[int]:
        """Natural column widths over every row (drawn or not), so that the layout holds
        still while scrolling; C-speed paths for text and integer columns."""
        widths = [text_width(h) for h in pane.headers]
        if not pane.rows:
            return widths
        columns = list(zip(*(e.values for e in pane.change.entries), strict=True))
        for i, values in enumerate(columns):
            if i in pane.rates:
                widest = max(map(len, map(rate_text, pane.rates[i])))
            else:
                widest = _widest(values)
            widths[i] = max(widths[i], widest)
        return widths

    def _texts(self, pane: Pane, pos: int) -> list[str]:
        cells = pane.texts.get(pos)
        if cells is None:
            cells = [cell_text(v) for v in pane.rows[pos].values]
            for i, rates in pane.rates.items():
                cells[i] = rate_text(rates[pane.order[pos]])
            pane.texts[pos] = cells
        return cells

    def _fit(self, pane: Pane, width: int) -> list[int]:
        chrome = len(GUTTER[SAME]) + len(SEP) * max(len(pane.widths) - 1, 0)
        return fit_widths(pane.widths, max(width - chrome, len(pane.widths)))

    def _cells(self, texts: list[str], widths: list[int], right: list[bool], style: str,
               changed: set[int] | None = None) -> Line:
        line: Line = []
        for i, (text, w) in enumerate(zip(texts, widths, strict=True)):
            cell = pad(truncate(text, w), w, right[i])
            if i:
                line.append((style, SEP))
            line.append((style + (" class:changed" if changed and i in changed else ""),
                         cell))
        return line

    def _header(self, pane: Pane, widths: list[int], right: list[bool]) -> Line:
        line: Line = [("class:header", GUTTER[SAME])]
        for i, (h, w) in enumerate(zip(pane.headers, widths, strict=True)):
            if i:
                line.append(("class:header", SEP))
            style = "class:header" + (" class:sorted" if pane.columns[i] == self.sort
                                      else "")
            line.append((style, pad(truncate(h, w), w, right[i])))
        return line

    def _row(self, pane: Pane, pos: int, widths: list[int], right: list[bool]) -> Line:
        e = pane.rows[pos]
        style = ROW_STYLE[e.status]
        changed = None
        if e.status == SAME and e.before is not None:
            roles = pane.change.shape.roles
            changed = {i for i, (a, b) in enumerate(zip(e.before, e.values, strict=True))
                       if roles[i] != KEY and a != b}
        return [(style, GUTTER[e.status]),
                *self._cells(self._texts(pane, pos), widths, right, style, changed)]

    def lines(self, width: int, height: int) -> list[Line]:
        """The whole screen: a title line, the result(s), a status line, the keys."""
        for n, pane in enumerate(self.panes):
            if not pane.ready:
                self._prepare(pane, n == self.focus)
        title, status, keys = self._title(width), self._status(width), self._keys(width)
        fixed: list[Line] = []
        # The scrolling part, as (pane, row position or a Line) items: rows are drawn
        # only when they are on screen.
        body: list[tuple[Pane, int | Line, list[int], list[bool]]] = []
        for n, pane in enumerate(self.panes):
            widths = self._fit(pane, width)
            right = [is_numeric(t) for t in pane.change.shape.types]
            header = self._header(pane, widths, right)
            if len(self.panes) == 1:
                fixed.append(header)
            else:
                mark = "▶ " if n == self.focus else "  "
                text = f"{mark}statement {pane.index} ({pane.origin}): {len(pane.rows)} rows"
                body.append((pane, [("class:pane", truncate(text, width))], widths, right))
                body.append((pane, header, widths, right))
            body += [(pane, pos, widths, right) for pos in range(len(pane.rows))]
            if len(self.panes) > 1:
                body.append((pane, [], widths, right))
        room = max(height - 3 - len(fixed), 1)
        self.body_height = room
        self.scroll = min(self.scroll, max(len(body) - room, 0))
        shown = [self._row(pane, item, widths, right) if isinstance(item, int) else item
                 for pane, item, widths, right in body[self.scroll:self.scroll + room]]
        screen = [title, *fixed, *shown]
        screen += [[] for _ in range(max(height - 2 - len(screen), 0))]
        return [*screen, status, keys][:height]

    def _title(self, width: int) -> Line:
        """``netsql watch │ PAUSED │ delta: off │ sort: rss ▼ │ 12:00:01 every 2 s │ 9 rows
        (+1 -0) │ 0.05 s │ the statement``: what the keys change first, the statement
        last (cut to fit)."""
        line: Line = [("class:title", " netsql watch │ ")]
        if self.paused:
            line += [("class:title class:paused", "PAUSED"), ("class:title", " │ ")]
        parts = ["delta: on (per second)" if self.delta else "delta: off"]
        if self.sort is not None:
            parts.append(f"sort: {self.sort} {'▼' if self.descending else '▲'}")
        r = self.refresh
        if r is not None:
            parts.append(r.wall.astimezone().strftime("%H:%M:%S")
                         + f" every {self.interval:g} s")
            entries = [e for p in self.panes for e in p.change.entries]
            rows = sum(1 for e in entries if e.status != GONE)
            new = sum(1 for e in entries if e.status == NEW)
            parts.append(f"{rows} rows (+{new} -{len(entries) - rows})")
            parts.append(f"{r.seconds:.2f} s")
        else:
            parts.append(f"every {self.interval:g} s")
        parts.append(self.title)
        line.append(("class:title", " │ ".join(parts)))
        used = sum(text_width(t) for _, t in line)
        line.append(("class:title", " " * max(width - used, 0)))
        return _clip(line, width)

    def _status(self, width: int) -> Line:
        if self.error:
            return [("class:error", truncate(self.error, width))]
        if self.warnings:
            return [("class:warning", truncate("warning: " + self.warnings[-1], width))]
        return [("class:legend", truncate("+ new row   - row gone (shown for one refresh)"
                                          "   bold: value changed", width))]

    def _keys(self, width: int) -> Line:
        text = KEYS + ("  Tab statement" if len(self.panes) > 1 else "")
        return [("class:keys", truncate(" " + text, width))]


def _clip(line: Line, width: int) -> Line:
    out: Line = []
    room = width
    for style, text in line:
        if room <= 0:
            break
        w = text_width(text)
        if w > room:
            text = truncate(text, room, "")
            w = text_width(text)
        out.append((style, text))
        room -= w
    return out


def plain(lines: list[Line]) -> str:
    """The screen as text (for tests and debugging)."""
    return "\n".join("".join(t for _, t in line) for line in lines)
