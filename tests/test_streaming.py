"""Output streams: rows are written as DuckDB produces them, in bounded memory, and the
text DuckDB renders for csv/json/jsonl is byte for byte the Python encoders' text."""

from __future__ import annotations

import io
import signal
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsql.context import Env
from netsql.engine import Engine
from netsql.formats.base import ResultSet
from netsql.formats.text import head_and_tail
from netsql.output import Printer

BIG = 10_000_000

TRICKY_TEXT = ["", "plain", "a,b", 'say "hi"', "line\nbreak", "cr\rlf\r\n", "tab\there",
               "\x1b[31mred\x1b[0m", "nul\x00byte", "del\x7f", "c1\x9bx", "bidi\u202eevil",
               "iso\u2066x\u2069", "ls\u2028ps\u2029", "back\\slash", "quote'single",
               "ünïcödé ✓ 漢字", "emoji 🎉", " lead and trail ", "\\u001b", "x" * 300,
               "vt\x0besc\x1b", "\\u001B", "é\x1b", "é\x7f", "é\\u00e9", "\x1f\x0e\x0f\x1a",
               "\\", '"', "\x7f", "\x85nel", "é\u2028"]
DOUBLES = ["0.1", "1.0", "-0.0", "1e16", "1e-5", "5e-324", "1.7976931348623157e308",
           "'nan'", "'-nan'", "'inf'", "'-inf'", "2.5", "123456789.125", "NULL"]


def _output(sql: str, fmt: str, rendered: bool, *, engine: Engine | None = None,
            tty: bool = False, render_rows: int = 0, how: list[str] | None = None
            ) -> tuple[str, bool]:
    """``sql``'s output in ``fmt``; and whether DuckDB rendered it (asked to whatever
    the result's size, or from ``render_rows`` rows on); ``how`` gets the name of the
    generator each rendered result's text came from."""
    engine = engine or Engine(tables=[], setups=[])
    engine.render_rows = render_rows
    out = io.StringIO()
    printer = Printer(Env(stdout=out, stderr=io.StringIO(), stdout_isatty=tty, width=100),
                      fmt)
    used = False
    for result in engine.run(sql, None, printer.render if rendered else None):
        text = result.data.text if result.data is not None else None
        used = used or text is not None
        if text is not None and how is not None:
            how.append(getattr(text, "__name__", "?"))
        printer.print(result)
    return out.getvalue(), used


def _values_sql(column: list[str], cast: str) -> str:
    rows = ", ".join(f"({v})" for v in column)
    return f"SELECT CAST(v AS {cast}) AS v FROM (VALUES {rows}) t(v)"


def _sql_text(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_rendered_text_is_the_python_encoders_text(fmt: str) -> None:
    texts = ", ".join(f"({_sql_text(t)}, {i})" for i, t in enumerate(TRICKY_TEXT))
    doubles = ", ".join(f"({d}::DOUBLE, {i})" for i, d in enumerate(DOUBLES))
    queries = [
        f"SELECT s, i, i % 2 = 0 AS even, NULL::VARCHAR AS n FROM (VALUES {texts}) t(s, i) "
        "ORDER BY i",
        f"SELECT d, i AS d FROM (VALUES {doubles}) t(d, i) ORDER BY i",
        f"SELECT s FROM (VALUES {texts}, (NULL, 99)) t(s, i) ORDER BY i",  # one column
        "SELECT NULL::BIGINT AS a UNION ALL SELECT 7",
        "SELECT 170141183460469231731687303715884105727::HUGEINT AS h, "
        "18446744073709551615::UBIGINT AS u, (-128)::TINYINT AS t, NULL::BOOLEAN AS b",
        "SELECT i * 0.5 AS half, CAST(i / 7 AS DECIMAL(18,6)) AS d, -i::DECIMAL(4,1) AS n "
        "FROM range(-3, 3) t(i)",
        "SELECT 1 AS a, 2 AS a, 3 AS a_1",  # duplicate names: distinct JSON keys
        'SELECT 1 AS "we\x1bird ""key""\n", 2 AS "\u2028"',
        "SELECT ts, CAST(ts AS DATE) AS d FROM (VALUES (TIMESTAMP '2024-01-02 03:04:05'), "
        "('2024-01-02 03:04:05.5'), ('0010-01-01 00:00:00.000001'), ('1969-12-31 "
        "23:59:59.999999'), ('9999-12-31 23:59:59.999999'), ('infinity'), ('-infinity'), "
        "(NULL), (make_timestamp(12000, 5, 6, 7, 8, 9.25)), (make_timestamp(-5, 1, 1, 0, "
        "0, 0)), (make_timestamp(0, 12, 31, 23, 59, 59.5)), ('1900-01-01'), ('1970-01-01'), "
        "('0001-01-01'), ('2024-02-29 12:00:00.000100')) t(ts)",
        "SELECT d FROM (VALUES (DATE 'infinity'), ('-infinity'), (make_date(-5, 1, 1)), "
        "(make_date(12000, 1, 1)), ('0001-01-01'), ('0999-12-31'), (NULL)) t(d)",
        "SELECT * FROM range(0)",  # no rows
        "SELECT i, 'row ' || i AS s FROM range(123457) t(i) ORDER BY i DESC",  # many batches
    ]
    how: list[str] = []
    for sql in queries:
        python, used_python = _output(sql, fmt, rendered=False)
        duck, used_duck = _output(sql, fmt, rendered=True)
        assert not used_python and used_duck, sql
        assert duck == python, sql
        # From one row on, as the plan expects it: short results are fetched as
        # strings (results.SMALL_TEXT), long ones read through Arrow.
        assert _output(sql, fmt, rendered=True, render_rows=1, how=how)[0] == python, sql
    assert how.count("_text_of") == 1 and how.count("_fetched") >= len(queries) - 3, how


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))),
    min_size=1, max_size=8))
def test_rendered_text_matches_for_any_text(texts: list[str | None]) -> None:
    engine = Engine(tables=[], setups=[])
    rows = ", ".join(f"({'NULL' if t is None else _sql_text(t)}, {i})"
                     for i, t in enumerate(texts))
    sql = f"SELECT CAST(s AS VARCHAR) AS s, i FROM (VALUES {rows}) t(s, i) ORDER BY i"
    for fmt in ("csv", "json", "jsonl"):
        assert _output(sql, fmt, True, engine=engine)[0] == \
            _output(sql, fmt, False, engine=engine)[0]


def test_rendered_text_matches_for_every_character() -> None:
    """Each character up to U+3000 but NUL, alone and between ASCII and non-ASCII
    text: DuckDB's rendering of the string is the Python encoders'."""
    engine = Engine(tables=[], setups=[])
    sql = ("SELECT unnest([c, 'a' || c || 'b', 'é' || c || '\\u00']) AS s, i "
           "FROM (SELECT chr(i::INTEGER) AS c, i FROM range(1, 12288) t(i)) ORDER BY i")
    for fmt in ("csv", "json", "jsonl"):
        duck, used = _output(sql, fmt, True, engine=engine)
        assert used and duck == _output(sql, fmt, False, engine=engine)[0], fmt


def test_other_types_and_terminals_use_the_python_encoders() -> None:
    sql = "SELECT TIMESTAMP '2024-01-02 03:04:05' AS ts, [1, 2] AS l"
    out, used = _output(sql, "csv", rendered=True)
    assert not used and out == "ts,l\r\n2024-01-02T03:04:05,\"[1, 2]\"\r\n"
    out, used = _output("SELECT 'a\x1bb' AS s", "csv", rendered=True, tty=True)
    assert not used and out == "s\r\na\\x1bb\r\n"


def test_small_results_skip_pyarrow() -> None:
    """DuckDB renders only results the plan expects to be long: a one-liner's few rows
    are quicker through Python than through the import of pyarrow."""
    code = ("import io, sys; from netsql.cli import main; "
            "from netsql.context import Env; out = io.StringIO(); "
            "main(['--local', '--csv', '-e', 'SELECT 1 AS one'], "
            "Env(stdout=out, stdout_isatty=False)); sys.stdout.write(out.getvalue()); "
            "print('pyarrow' in sys.modules, file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert p.stdout.splitlines() == ["one", "1"] and p.stderr.strip() == "False", p.stderr
    engine = Engine(tables=[], setups=[])
    printer = Printer(Env(stdout=io.StringIO(), stderr=io.StringIO(), stdout_isatty=False),
                      "csv")
    small = engine.execute("SELECT * FROM range(10)", None, printer.render).data
    assert small is not None and small.text is None and len(small.rows) == 10
    big = engine.execute("SELECT * FROM range(1000000)", None, printer.render).data
    assert big is not None and big.text is not None
    assert sum(len(b) for b in big.text) == sum(len(f"{i}\r\n") for i in range(1000000))


def test_a_result_streams_in_chunks_and_the_engine_settles_it() -> None:
    engine = Engine(tables=[], setups=[])
    first = engine.execute("SELECT * FROM range(100000)")
    assert first.data is not None and first.data.streaming
    sizes = [len(c) for c in first.data.chunks()]
    assert len(sizes) > 1 and sum(sizes) == 100_000 and first.data.count == 100_000
    # A result nobody read is held when the engine runs the next statement...
    unread = engine.execute("SELECT * FROM range(5)").data
    after = engine.execute("SELECT 42").data
    assert unread is not None and list(unread.rows) == [(i,) for i in range(5)]
    assert after is not None and after.rows == [(42,)]
    # ...and one read in part is ended, leaving the connection free.
    partial = engine.execute("SELECT * FROM range(10000000)").data
    assert partial is not None and len(next(partial.chunks())) > 0
    assert engine.execute("SELECT 43").data.rows == [(43,)]  # type: ignore[union-attr]


def test_runtime_error_while_streaming_is_one_line() -> None:
    from netsql.errors import NetsqlError

    sql = ("SELECT i, CAST(CASE WHEN i = 150000 THEN 'x' ELSE '1' END AS INT) AS v "
           "FROM range(200000) t(i)")
    for rendered in (False, True):
        with pytest.raises(NetsqlError, match="Could not convert string 'x'"):
            _output(sql, "csv", rendered)
    short = sql.replace("150000", "1500").replace("200000", "2000")  # fetched as text
    for rendered in (False, True):
        with pytest.raises(NetsqlError, match="Could not convert string 'x'"):
            _output(short, "csv", rendered, render_rows=1)


def test_head_and_tail_holds_the_ends() -> None:
    chunks = ([(i,) for i in range(n, n + 7)] for n in range(0, 70, 7))
    first, skipped, last = head_and_tail(chunks, 10)
    assert first == [(i,) for i in range(5)] and last == [(i,) for i in range(65, 70)]
    assert skipped == 60
    assert head_and_tail(iter([[(1,)], [(2,)]]), 10) == ([(1,), (2,)], 0, [])
    assert head_and_tail(iter([[(1,)], [(2,)]]), 0) == ([(1,), (2,)], 0, [])
    first, skipped, last = head_and_tail(iter([[(i,) for i in range(11)]]), 3)
    assert (first, skipped, last) == ([(0,), (1,)], 8, [(10,)])


def test_table_on_a_terminal_shows_first_and_last_rows_and_the_count() -> None:
    out, _ = _output("SELECT i, 'v' || i AS s FROM range(1000000) t(i)", "table",
                     rendered=True, tty=True)
    lines = out.splitlines()
    assert lines[1].split() == ["│", "i", "│", "s", "│"]
    body = [line for line in lines if line.startswith("│")]
    shown = [line.split()[1] for line in body[1:-1] if line.split()[1] != "·"]
    assert shown == [str(i) for i in range(20)] + [str(i) for i in range(999980, 1000000)]
    assert sum(line.split()[1] == "·" for line in body) == 3
    assert "1,000,000 rows (40 shown)" in body[-1]
    assert lines[-1].startswith("└") and lines[-1].endswith("┘")
    widths = {len(line) for line in lines}
    assert len(widths) == 1  # the box is closed and square
    small, _ = _output("SELECT * FROM range(3)", "table", rendered=True, tty=True)
    assert "rows (" not in small and small.count("\n") == 7


def test_table_off_a_terminal_streams_with_the_first_rows_widths() -> None:
    sql = "SELECT CASE WHEN i < 2000 THEN 'short' ELSE 'much longer value' END AS s " \
          "FROM range(3000) t(i)"
    engine = Engine(tables=[], setups=[])
    out, err = io.StringIO(), io.StringIO()
    printer = Printer(Env(stdout=out, stderr=err, stdout_isatty=False), "table")
    for result in engine.run(sql):
        printer.print(result)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 + 3000 + 1
    assert lines[3] == "│ short │" and lines[-2] == "│ much longer value │"
    assert "1000 values wider than the columns" in err.getvalue()


# Forks netsql from a small Python, so the peak RSS wait4 reports is netsql's own (a
# child forked from pytest starts with pytest's pages counted as its own).
_LAUNCH = """import os, sys
pid = os.fork()
if pid == 0:
    fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 1)
    os.execv(sys.executable, [sys.executable, "-m", "netsql", "--local", *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def _run_child(args: list[str]) -> tuple[int, str, int]:
    """Run netsql, output to /dev/null; (exit status, stderr, peak RSS in KiB)."""
    p = subprocess.run([sys.executable, "-c", _LAUNCH, *args], capture_output=True,
                       text=True, timeout=600)
    status, peak = p.stdout.split()
    return int(status), p.stderr, int(peak)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "table", "line", "markdown"])
def test_ten_million_rows_piped_to_head_end_promptly_and_cleanly(fmt: str) -> None:
    p = subprocess.Popen([sys.executable, "-m", "netsql", "--local", "--format", fmt, "-e",
                          f"SELECT * FROM range({BIG})"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    first = p.stdout.readline()
    p.stdout.close()  # what head does after its line
    try:
        status = p.wait(timeout=60)  # a hang guard, not a timing assert
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    err = p.stderr.read()
    p.stderr.close()
    assert first.strip()
    assert status in (0, -signal.SIGPIPE), err
    assert b"Traceback" not in err and err == b"", err


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_ten_million_rows_stream_in_bounded_memory(fmt: str) -> None:
    status, err, peak_kib = _run_child(["--format", fmt, "-e",
                                        f"SELECT i, i * 2 AS j FROM range({BIG}) t(i)"])
    assert status == 0, err
    assert peak_kib < 300 * 1024, f"{fmt}: peak RSS {peak_kib // 1024} MiB"


@pytest.mark.parametrize("fmt", ["csv", "table"])
def test_python_encoders_stream_in_bounded_memory(fmt: str) -> None:
    """Rows DuckDB does not render (a TIMESTAMPTZ; the table format) go through Python, a
    chunk at a time: 1,000,000 rows (about 100 MB of text) in no more memory."""
    status, err, peak_kib = _run_child(
        ["--format", fmt, "-e", "SELECT TIMESTAMPTZ '2024-01-01' + INTERVAL (i) SECOND AS ts, "
         "'host-' || i AS name FROM range(1000000) t(i)"])
    assert status == 0, err
    assert peak_kib < 300 * 1024, f"{fmt}: peak RSS {peak_kib // 1024} MiB"


def test_first_row_comes_before_the_result_ends() -> None:
    """A result of 10,000,000 rows shows its first row while DuckDB still produces
    them: the child is still running after the first line arrives."""
    p = subprocess.Popen([sys.executable, "-m", "netsql", "--local", "--format", "line",
                          "-e", f"SELECT * FROM range({BIG})"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert p.stdout is not None
    try:
        assert p.stdout.readline() == b"range = 0\n"
        assert p.poll() is None  # line format: tens of seconds for them all
    finally:
        p.kill()
        p.wait()
        p.stdout.close()


def test_held_result_set_still_works() -> None:
    rs = ResultSet(["a"], ["INTEGER"], [(1,), (2,)])
    assert not rs.streaming and list(rs.chunks()) == [[(1,), (2,)]] and rs.count == 2
    streamed = ResultSet(["a"], ["INTEGER"], chunks=iter([[(1,)], [(2,)]]))
    assert streamed.streaming and streamed.rows == [(1,), (2,)]
