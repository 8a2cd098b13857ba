"""The full-screen view's content, without a terminal: marks, delta mode, sorting,
pause, several statements, fitting the screen."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from netsql.errors import NetsqlError
from netsql.formats.base import ResultSet
from netsql.formats.text import text_width
from netsql.watch.runner import Refresh, Snapshot
from netsql.watch.view import View, plain, rate_text

COLUMNS = ["pid", "name", "bytes_sent", "rtt"]
TYPES = ["INTEGER", "VARCHAR", "UBIGINT", "DOUBLE"]


def refresh(n: int, at: float, *results: list[tuple[Any, ...]]) -> Refresh:
    r = Refresh(n, dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), at, seconds=0.05)
    r.snapshots = [Snapshot(i, "sql", "SELECT ...", ResultSet(COLUMNS, TYPES, rows))
                   for i, rows in enumerate(results, 1)]
    return r


def screen(view: View, width: int = 80, height: int = 12) -> list[str]:
    lines = view.lines(width, height)
    assert len(lines) == height
    assert all(text_width("".join(t for _, t in line)) <= width for line in lines)
    return plain(lines).splitlines()


def row(lines: list[str], name: str) -> str:
    (hit,) = [line for line in lines if f" {name} " in line]
    return hit


def test_marks_new_and_gone_rows_for_one_refresh() -> None:
    view = View("SELECT ...", 1.0)
    view.update(refresh(1, 10.0, [(1, "init", 100, 0.1), (2, "sshd", 500, 0.2)]))
    first = screen(view)
    assert "2 rows (+0 -0)" in first[0] and "delta: off" in first[0]
    assert first[1].split() == COLUMNS
    assert row(first, "init").startswith("  ") and row(first, "sshd").startswith("  ")
    view.update(refresh(2, 11.0, [(1, "init", 100, 0.1), (3, "curl", 7, 0.3)]))
    second = screen(view)
    assert "2 rows (+1 -1)" in second[0]
    assert row(second, "curl").startswith("+ ") and row(second, "sshd").startswith("- ")
    view.update(refresh(3, 12.0, [(1, "init", 100, 0.1), (3, "curl", 9, 0.3)]))
    third = screen(view)
    assert "sshd" not in "\n".join(third) and row(third, "curl").startswith("  ")
    # A changed measure is drawn bold.
    styles = [style for line in view.lines(80, 12) for style, text in line if text.strip() == "9"]
    assert styles and "class:changed" in styles[0]


def test_delta_mode_shows_rates_of_counters_only() -> None:
    view = View("SELECT ...", 2.0)
    view.update(refresh(1, 10.0, [(1, "init", 1000, 0.5)]))
    view.update(refresh(2, 12.0, [(1, "init", 5000, 0.25)]))
    assert "5000" in row(screen(view), "init")
    view.toggle_delta()
    lines = screen(view)
    assert "delta: on (per second)" in lines[0]
    assert lines[1].split() == ["pid", "name", "bytes_sent/s", "rtt"]
    assert row(lines, "init").split() == ["1", "init", "2.0k", "0.25"]  # 4000 B in 2 s
    view.toggle_delta()
    assert row(screen(view), "init").split() == ["1", "init", "5000", "0.25"]


def test_sorting_cycles_columns_and_reverses() -> None:
    view = View("SELECT ...", 1.0)
    view.update(refresh(1, 1.0, [(1, "b", 10, 0.1), (2, "a", 30, 0.2), (3, "c", 20, None)]))

    def names() -> list[str]:
        return [line.split()[1] for line in screen(view)[2:5]]

    assert names() == ["b", "a", "c"]  # the query's order
    view.cycle_sort(1)
    view.cycle_sort(1)  # name: text sorts ascending
    assert names() == ["a", "b", "c"] and "sort: name ▲" in screen(view)[0]
    view.cycle_sort(1)  # bytes_sent: numbers sort largest first
    assert names() == ["a", "c", "b"] and "bytes_sent ▼" in screen(view)[1]
    view.reverse()
    assert names() == ["b", "c", "a"]
    view.cycle_sort(1)  # rtt: NULL stays last either way
    assert names()[-1] == "c"
    view.cycle_sort(1)  # back to the query's order
    assert names() == ["b", "a", "c"] and "sort:" not in screen(view)[0]


def test_pause_error_and_scrolling() -> None:
    view = View("SELECT ...", 1.0)
    rows = [(i, f"p{i}", i, 0.0) for i in range(100)]
    view.update(refresh(1, 1.0, rows))
    view.toggle_pause()
    lines = screen(view, height=10)
    assert "PAUSED" in lines[0]
    shown = [x.split()[1] for x in lines if re.match(r"\s+\d+\s+p\d+", x)]
    assert shown == [f"p{i}" for i in range(6)]  # 10 lines: title, header, 6 rows, 2 more
    view.page(1)  # a page keeps one row of the last
    assert screen(view, height=10)[2].split()[1] == "p5"
    view.scroll_by(10**6)
    assert screen(view, height=10)[7].split()[1] == "p99"
    failed = refresh(2, 2.0)
    failed.error = NetsqlError("boom")
    view.update(failed)
    lines = screen(view, height=10)
    assert lines[-2] == "refresh 2 failed: boom" and "p99" in lines[7]


def test_several_statements_and_narrow_screens() -> None:
    view = View("a long statement " * 10, 1.0)
    view.update(refresh(1, 1.0, [(1, "x" * 200, 1, 0.0)], [(2, "y", 2, 0.0)]))
    lines = screen(view, width=40, height=12)
    assert "statement 1" in lines[1] and any("statement 2" in x for x in lines)
    assert "Tab" in lines[-1] or lines[-1].endswith("…")
    assert any("…" in x for x in lines)  # the long value is cut with an ellipsis
    view.next_pane()
    assert any(x.startswith("▶ statement 2") for x in screen(view, 40, 12))


def test_rate_text() -> None:
    assert [rate_text(v) for v in (None, 0.0, 3.0, 12.25, 999.0, 1234.0, 5.5e6, 2e9)] == [
        "", "0", "3", "12.2", "999", "1.2k", "5.5M", "2.0G"]
