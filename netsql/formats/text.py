"""Formats for people: table (the terminal default), line, markdown.

All three make control characters visible (:func:`escape_control`), so a value such as
``'\\x1b[31mred'`` or a bidi override cannot restyle the terminal or reorder the screen.
Values are shown as DuckDB's own shell shows them: NULL as ``NULL``, booleans as
``true``/``false``, DECIMAL exactly, timestamps as ``2024-01-02 03:04:05``, BLOBs with
non-printable bytes as ``\\xAA``, LIST/STRUCT/MAP as JSON text (NULL inside is ``null``).
Note that a backslash is not doubled: the text ``\\x1b`` and an escaped ESC look alike.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TextIO

from netsql.formats.base import OutputContext, ResultSet
from netsql.formats.data import decimal_text, escape_control, json_value

ELLIPSIS = "…"
MIN_WIDTH = 8  # columns are not cut below this unless nothing else fits

_NUMERIC_TYPE = re.compile(
    r"(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?|INT[1248]|FLOAT[48]?|DOUBLE|REAL|"
    r"DECIMAL|NUMERIC)(\(\d+(,\s*\d+)?\))?", re.IGNORECASE)


def cell_text(v: Any) -> str:
    """One value as the single-line, escaped text a person reads in a table."""
    kind = type(v)  # exact-type fast paths for the common cases
    if kind is str:
        return escape_control(v)
    if kind is int:
        return int.__repr__(v)
    if v is None:
        return "NULL"
    if isinstance(v, str):
        return escape_control(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return int.__repr__(v)
    if isinstance(v, float):
        return float.__repr__(v)
    if isinstance(v, Decimal):
        return decimal_text(v)
    if isinstance(v, dt.datetime):
        return str(v)
    if isinstance(v, dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return str(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return "".join(chr(b) if 32 <= b < 127 and b != 92 else f"\\x{b:02X}"
                       for b in bytes(v))
    if isinstance(v, list | tuple | dict):
        return escape_control(json_value(v))
    return escape_control(str(v))


def text_width(s: str) -> int:
    """Terminal cells ``s`` occupies (CJK and emoji count two)."""
    if s.isascii():
        return len(s)
    from wcwidth import wcswidth, wcwidth  # only for non-ASCII text: keeps `-e` start-up fast

    w = wcswidth(s)
    return w if w >= 0 else sum(max(wcwidth(c), 0) for c in s)


def truncate(s: str, width: int, ellipsis: str = ELLIPSIS) -> str:
    """``s`` cut to at most ``width`` cells, ending in ``ellipsis`` when anything was cut."""
    if text_width(s) <= width:
        return s
    if width <= 0:
        return ""
    room = width - 1
    if s.isascii():
        return s[:room] + ellipsis
    from wcwidth import wcwidth

    used = 0
    for i, c in enumerate(s):
        used += max(wcwidth(c), 0)
        if used > room:
            return s[:i] + ellipsis
    return s + ellipsis  # unreachable: s is wider than width


def pad(s: str, width: int, right: bool = False) -> str:
    fill = " " * (width - text_width(s))
    return fill + s if right else s + fill


def numeric_columns(result: ResultSet) -> list[bool]:
    """Which columns hold numbers (right-aligned): by DuckDB type, else by values."""
    flags = []
    for i, _ in enumerate(result.columns):
        typ = result.types[i] if i < len(result.types) else ""
        if _NUMERIC_TYPE.fullmatch(str(typ).strip()):
            flags.append(True)
            continue
        values = [row[i] for row in result.rows if row[i] is not None]
        flags.append(bool(values) and all(
            isinstance(v, int | float | Decimal) and not isinstance(v, bool) for v in values))
    return flags


def fit_widths(natural: Sequence[int], budget: int) -> list[int]:
    """Column widths summing to at most ``budget``: the widest columns give way first,
    none below ``MIN_WIDTH`` (or 1, if even that does not fit)."""
    if sum(natural) <= budget:
        return list(natural)
    floors = [min(n, MIN_WIDTH) for n in natural]
    if sum(floors) > budget:
        floors = [min(n, 1) for n in natural]
        if sum(floors) >= budget:
            return floors
    lo, hi = 0, max(natural)  # largest cap whose total fits
    while lo < hi:
        cap = (lo + hi + 1) // 2
        if sum(max(f, min(n, cap)) for f, n in zip(floors, natural, strict=True)) <= budget:
            lo = cap
        else:
            hi = cap - 1
    widths = [max(f, min(n, lo)) for f, n in zip(floors, natural, strict=True)]
    spare = budget - sum(widths)
    for i, n in enumerate(natural):
        if spare <= 0:
            break
        if widths[i] < n:
            widths[i] += 1
            spare -= 1
    return widths


def _can_encode(out: TextIO, text: str) -> bool:
    encoding = getattr(out, "encoding", None)
    if not encoding:
        return True
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class TableFormat:
    name = "table"
    description = "a boxed table fitted to the terminal width (the default on a terminal)"

    def write(self, result: ResultSet, out: TextIO, ctx: OutputContext) -> None:
        ncols = len(result.columns)
        if ncols == 0 or (not ctx.header and not result.rows):
            return
        if _can_encode(out, "┌─┬┐│├┼┤└┴┘" + ELLIPSIS):
            box, vert, ellipsis = ("┌┬┐", "├┼┤", "└┴┘", "─"), "│", ELLIPSIS
        else:
            box, vert, ellipsis = ("+++", "+++", "+++", "-"), "|", "~"
        header = [escape_control(c) for c in result.columns]
        body = [[cell_text(v) for v in row] for row in result.rows]
        body_widths = [[text_width(c) for c in cells] for cells in body]
        natural = [text_width(h) if ctx.header else 0 for h in header]
        for cell_widths in body_widths:
            natural = list(map(max, natural, cell_widths))
        chrome = 3 * ncols + 1
        widths = natural if ctx.width <= 0 else fit_widths(natural, ctx.width - chrome)
        right = numeric_columns(result)

        def line(corners: str) -> str:
            return corners[0] + corners[1].join(box[3] * (w + 2) for w in widths) + corners[2]

        def row_line(cells: list[str], cell_widths: list[int]) -> str:
            parts = []
            for c, cw, w, r in zip(cells, cell_widths, widths, right, strict=True):
                if cw > w:
                    parts.append(pad(truncate(c, w, ellipsis), w, r))
                else:
                    parts.append(" " * (w - cw) + c if r else c + " " * (w - cw))
            return f"{vert} " + f" {vert} ".join(parts) + f" {vert}"

        out.write(line(box[0]) + "\n")
        if ctx.header:
            out.write(row_line(header, [text_width(h) for h in header]) + "\n")
            if body:
                out.write(line(box[1]) + "\n")
        for cells, cell_widths in zip(body, body_widths, strict=True):
            out.write(row_line(cells, cell_widths) + "\n")
        out.write(line(box[2]) + "\n")
        out.flush()

        cut = sum(w < n for w, n in zip(widths, natural, strict=True))
        total = sum(widths) + chrome
        too_wide = 0 < ctx.width < total
        if cut or too_wide:
            what = f"{cut} column{'s' if cut != 1 else ''} cut to fit a width of {ctx.width}"
            if too_wide:
                what = (f"{what}, still {total} wide" if cut else
                        f"the table is {total} wide, more than the width of {ctx.width}")
            ctx.notice(f"{what}; use {ctx.whole_values} or a wider terminal to see whole "
                       "values")


class LineFormat:
    name = "line"
    description = "one 'column = value' line per value, a blank line between rows"

    def write(self, result: ResultSet, out: TextIO, ctx: OutputContext) -> None:
        names = [escape_control(c) for c in result.columns]
        if not names:
            return
        name_width = max(text_width(n) for n in names)
        labels = [pad(n, name_width, right=True) + " = " for n in names]
        for i, row in enumerate(result.rows):
            if i:
                out.write("\n")
            for label, v in zip(labels, row, strict=True):
                out.write(label + cell_text(v) + "\n")


class MarkdownFormat:
    name = "markdown"
    description = "a GitHub-flavoured Markdown pipe table"

    def write(self, result: ResultSet, out: TextIO, ctx: OutputContext) -> None:
        if not result.columns:
            return

        def md(s: str) -> str:
            return s.replace("|", "\\|")

        header = [md(escape_control(c)) for c in result.columns]
        body = [[md(cell_text(v)) for v in row] for row in result.rows]
        widths = [max(3, text_width(h)) if ctx.header else 0 for h in header]
        for cells in body:
            widths = [max(w, text_width(c)) for w, c in zip(widths, cells, strict=True)]
        right = numeric_columns(result)

        def row_line(cells: list[str]) -> str:
            parts = [pad(c, w, r) for c, w, r in zip(cells, widths, right, strict=True)]
            return "| " + " | ".join(parts) + " |\n"

        if ctx.header:
            out.write(row_line(header))
            out.write("| " + " | ".join("-" * (w - 1) + ":" if r else "-" * w
                                        for w, r in zip(widths, right, strict=True)) + " |\n")
        for cells in body:
            out.write(row_line(cells))
