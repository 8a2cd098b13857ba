"""Output formats: exact renderings, round trips, escaping, and width fitting."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from collections.abc import Iterator, Sequence
from decimal import Decimal
from ipaddress import IPv4Address

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from wcwidth import wcswidth

from netsql.formats import FORMATS, escape_control, format_names, get_formatter
from netsql.formats.base import OutputContext, ResultSet
from netsql.formats.data import unique_keys
from netsql.formats.text import MIN_WIDTH, fit_widths, truncate

ESC_RED = "\x1b[31mred\x1b[0m"
TS = dt.datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=dt.UTC)

# Every kind of value DuckDB's Python client hands back, plus hostile text.
TRICKY = ResultSet(
    columns=["id", "id", "name", "price", "ratio", "ok", "tags", "nested", "meta", "ts",
             "day", "rtt", "raw", "uid", "addr", "note"],
    types=["INTEGER", "INTEGER", "VARCHAR", "DECIMAL(10,2)", "DOUBLE", "BOOLEAN", "VARCHAR[]",
           "INTEGER[][]", "STRUCT(k VARCHAR)", "TIMESTAMP WITH TIME ZONE", "DATE", "INTERVAL",
           "BLOB", "UUID", "INET", "VARCHAR"],
    rows=[
        (1, 10, ESC_RED, Decimal("1.50"), 0.1, True, ["a", None, "b,c"], [[1], [2, None]],
         {"k": "v", "n": None}, TS, dt.date(2024, 1, 2), dt.timedelta(seconds=1.5),
         b"\x00ab\\", uuid.UUID(int=1), IPv4Address("10.0.0.1"), 'comma, "quote"\nline2'),
        (2, 20, "漢字😀 wide", Decimal("-0.05"), float("nan"), False, [], [],
         {}, dt.datetime(2024, 1, 2, 3, 4, 5), dt.date(1999, 12, 31), dt.timedelta(days=1),
         b"", uuid.UUID(int=2), IPv4Address("192.168.1.1"), "pipe | and \u202eevil\r\t"),
        (None, None, None, None, float("inf"), None, None, None, None, None, None, None,
         None, None, None, None),
    ],
)


def render(name: str, result: ResultSet = TRICKY, *, tty: bool = False, width: int = 80,
           header: bool = True) -> tuple[str, list[str]]:
    """``result`` rendered by format ``name``; also the notices it gave."""
    notices: list[str] = []
    ctx = OutputContext(tty=tty, width=width, header=header, notice=notices.append)
    out = io.StringIO()
    get_formatter(name).write(result, out, ctx)
    return out.getvalue(), notices


def simple(rows: Sequence[tuple[object, ...]], columns: tuple[str, ...] = ("name", "n"),
           types: tuple[str, ...] = ("VARCHAR", "INTEGER")) -> ResultSet:
    return ResultSet(list(columns), list(types), rows)


# --- registry and escaping ------------------------------------------------------------

def test_registry_order_and_lookup() -> None:
    assert format_names() == ["table", "line", "csv", "json", "jsonl", "markdown"]
    assert [f.name for f in FORMATS] == format_names()
    assert all(f.description for f in FORMATS)
    assert get_formatter("JSON") is FORMATS[3]
    with pytest.raises(KeyError, match="choose from: table, line"):
        get_formatter("xml")
    assert get_formatter("csv", formats=[FORMATS[2]]).name == "csv"
    with pytest.raises(KeyError):
        get_formatter("table", formats=[FORMATS[2]])


@pytest.mark.parametrize(("raw", "shown"), [
    ("\x1b[31m", "\\x1b[31m"),
    ("a\nb\rc\td", "a\\nb\\rc\\td"),
    ("\x00\x07\x7f", "\\x00\\x07\\x7f"),
    ("\x9b2J", "\\x9b2J"),                 # C1 CSI
    ("\u202eabc\u2066x\u2069", "\\u202eabc\\u2066x\\u2069"),
    ("bad\udcff\udc80", "bad\\xff\\x80"),  # bytes decoded with surrogateescape
    ("\ud800", "\\ud800"),                 # any other lone surrogate
    ("a\u2028b\u2029", "a\\u2028b\\u2029"),  # Unicode line/paragraph separators
])
def test_escape_control(raw: str, shown: str) -> None:
    assert escape_control(raw) == shown


def test_escape_control_leaves_clean_text_alone() -> None:
    text = "plain ascii, accents é, 漢字, emoji 😀, backslash \\x1b"
    assert escape_control(text) is text


def test_unique_keys() -> None:
    assert unique_keys(["a", "b"]) == ["a", "b"]
    assert unique_keys(["a", "a", "a"]) == ["a", "a_1", "a_2"]
    assert unique_keys(["a", "a", "a_1"]) == ["a", "a_2", "a_1"]


# --- json / jsonl ------------------------------------------------------------------

def test_json_round_trip_native_types() -> None:
    text, notices = render("json")
    assert text.endswith("]\n") and notices == []
    data = json.loads(text, parse_float=Decimal)
    assert isinstance(data, list) and len(data) == 3
    first, second, nulls = data
    assert list(first) == ["id", "id_1", "name", "price", "ratio", "ok", "tags", "nested",
                           "meta", "ts", "day", "rtt", "raw", "uid", "addr", "note"]
    assert (first["id"], first["id_1"]) == (1, 10)
    assert first["name"] == ESC_RED
    assert first["price"] == Decimal("1.50") and str(first["price"]) == "1.50"
    assert first["ratio"] == Decimal("0.1")
    assert first["ok"] is True and second["ok"] is False
    assert first["tags"] == ["a", None, "b,c"]
    assert first["nested"] == [[1], [2, None]]
    assert first["meta"] == {"k": "v", "n": None}
    assert first["ts"] == "2024-01-02T03:04:05.123000+00:00"
    assert dt.datetime.fromisoformat(first["ts"]) == TS
    assert first["day"] == "2024-01-02"
    assert first["rtt"] == Decimal("1.5") and second["rtt"] == 86400
    assert bytes.fromhex(first["raw"]) == b"\x00ab\\"
    assert first["uid"] == str(uuid.UUID(int=1))
    assert first["addr"] == "10.0.0.1"
    assert first["note"] == 'comma, "quote"\nline2'
    assert second["name"] == "漢字😀 wide"
    assert second["ratio"] is None and nulls["ratio"] is None  # NaN and inf
    assert second["note"] == "pipe | and \u202eevil\r\t"
    assert all(v is None for k, v in nulls.items() if k != "ratio")


def test_json_python_types_without_decimal_parsing() -> None:
    first = json.loads(render("json")[0])[0]
    assert type(first["id"]) is int and type(first["ratio"]) is float
    assert type(first["price"]) is float and first["price"] == 1.5


def test_json_escapes_terminal_controls() -> None:
    text, _ = render("json")
    assert "\x1b" not in text and "\\u001b[31mred\\u001b[0m" in text
    assert "\u202e" not in text and "\\u202e" in text
    hostile = simple([("\x9b\x7f\udcff", 1)])
    out, _ = render("json", hostile)
    assert out == '[\n{"name": "\\u009b\\u007f\\udcff", "n": 1}\n]\n'


def test_json_empty_and_streamed() -> None:
    assert render("json", simple([]))[0] == "[]\n"
    assert json.loads(render("json", simple([]))[0]) == []

    # Each chunk of a streamed result is written before the next one is read.
    for fmt in FORMATS:
        out = io.StringIO()
        seen: list[int] = []

        def chunks(out: io.StringIO = out, seen: list[int] = seen
                   ) -> Iterator[list[tuple[object, ...]]]:
            for c in range(5):
                seen.append(len(out.getvalue()))
                yield [(f"r{i}", i) for i in range(c * 10, c * 10 + 10)]

        streamed = ResultSet(["name", "n"], ["VARCHAR", "INTEGER"], chunks=chunks())
        fmt.write(streamed, out, OutputContext())
        assert seen[1] > 0 and seen == sorted(set(seen)), fmt.name
    out = io.StringIO()
    rows = [(f"r{i}", i) for i in range(50)]
    get_formatter("json").write(ResultSet(["name", "n"], ["VARCHAR", "INTEGER"],
                                          chunks=[rows[:20], [], rows[20:]]), out,
                                OutputContext())
    assert json.loads(out.getvalue()) == [{"name": f"r{i}", "n": i} for i in range(50)]


def test_jsonl() -> None:
    text, _ = render("jsonl")
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == 4
    objs = [json.loads(line) for line in lines[:-1]]
    assert objs[0]["id_1"] == 10 and objs[0]["tags"] == ["a", None, "b,c"]
    assert objs == json.loads(render("json")[0])
    assert "\x1b" not in text
    assert render("jsonl", simple([]))[0] == ""


def test_json_real_duckdb_result() -> None:
    duckdb = pytest.importorskip("duckdb")
    cur = duckdb.connect().execute(
        "SELECT 1 AS a, 2 AS a, [1, NULL]::INT[] AS l, [[1], [2, 3]] AS n, "
        "{'x': 1} AS s, MAP {1: 'one'} AS m, 1.50::DECIMAL(10, 2) AS d, "
        "'nan'::DOUBLE AS f, TIMESTAMP '2024-01-02 03:04:05' AS ts, "
        "INTERVAL 90 MINUTE AS iv, 'ab'::BLOB AS b, chr(27) || 'x' AS e, "
        "['p', NULL]::VARCHAR[2] AS arr")
    result = ResultSet([d[0] for d in cur.description], [str(d[1]) for d in cur.description],
                       cur.fetchall())
    (obj,) = json.loads(render("json", result)[0])
    assert obj == {"a": 1, "a_1": 2, "l": [1, None], "n": [[1], [2, 3]], "s": {"x": 1},
                   "m": {"1": "one"}, "d": 1.5, "f": None, "ts": "2024-01-02T03:04:05",
                   "iv": 5400, "b": "6162", "e": "\x1bx", "arr": ["p", None]}
    table, _ = render("table", result, width=0)
    assert "\x1b" not in table and "[1, null]" in table and "1.50" in table


# --- csv -----------------------------------------------------------------------------

def test_csv_piped_round_trips_raw_values() -> None:
    text, _ = render("csv")
    assert text.startswith("id,id,name,price,")
    assert text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == TRICKY.columns
    first, second, nulls = rows[1:]
    assert first[2] == ESC_RED  # raw when piped: data fidelity
    assert first[3:6] == ["1.50", "0.1", "true"]
    assert json.loads(first[6]) == ["a", None, "b,c"]
    assert json.loads(first[7]) == [[1], [2, None]]
    assert json.loads(first[8]) == {"k": "v", "n": None}
    assert first[9] == TS.isoformat() and first[10] == "2024-01-02"
    assert first[11] == "1.5" and second[11] == "86400"
    assert first[12] == "0061625c"
    assert first[15] == 'comma, "quote"\nline2'
    assert second[2] == "漢字😀 wide" and second[4] == "nan" and second[5] == "false"
    assert second[15] == "pipe | and \u202eevil\r\t"
    assert nulls[4] == "inf" and [v for i, v in enumerate(nulls) if i != 4] == [""] * 15


def test_csv_exact_quoting() -> None:
    result = simple([('say "hi", ok', 1), (None, None), ("", 3)])
    text, _ = render("csv", result)
    assert text == 'name,n\r\n"say ""hi"", ok",1\r\n,\r\n,3\r\n'
    assert render("csv", result, header=False)[0] == '"say ""hi"", ok",1\r\n,\r\n,3\r\n'


def test_csv_on_terminal_escapes_controls() -> None:
    text, _ = render("csv", tty=True)
    assert "\x1b" not in text and "\u202e" not in text
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[1][2] == "\\x1b[31mred\\x1b[0m"
    assert rows[1][15] == 'comma, "quote"\\nline2'
    assert rows[2][15] == "pipe | and \\u202eevil\\r\\t"
    assert len(rows) == 4  # no value spans lines


# --- table -------------------------------------------------------------------------

def test_table_exact() -> None:
    result = simple([("alpha", 1), (None, 12345), ("漢字", None)])
    text, notices = render("table", result)
    assert text == (
        "┌───────┬───────┐\n"
        "│ name  │     n │\n"
        "├───────┼───────┤\n"
        "│ alpha │     1 │\n"
        "│ NULL  │ 12345 │\n"
        "│ 漢字  │  NULL │\n"
        "└───────┴───────┘\n")
    assert notices == []
    assert render("table", result, tty=True)[1] == []


def test_table_empty_result_shows_columns() -> None:
    text, notices = render("table", simple([]), tty=True)
    assert text == "┌──────┬───┐\n│ name │ n │\n└──────┴───┘\n"
    assert notices == []
    assert render("table", simple([]), header=False)[0] == ""


def test_table_without_header() -> None:
    text, _ = render("table", simple([("x", 1)]), header=False)
    assert text == "┌───┬───┐\n│ x │ 1 │\n└───┴───┘\n"


def test_table_ascii_fallback_for_narrow_encodings() -> None:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="latin-1")
    get_formatter("table").write(simple([("abcdefghijklmnop", 1)]), out,
                                 OutputContext(width=16, notice=lambda _: None))
    out.flush()
    assert raw.getvalue().decode("latin-1") == (
        "+----------+---+\n| name     | n |\n+----------+---+\n"
        "| abcdefg~ | 1 |\n+----------+---+\n")


def test_table_escapes_everything() -> None:
    text, _ = render("table", width=0)
    for bad in ("\x1b", "\r", "\t", "\u202e", "\x00"):
        assert bad not in text
    lines = text.splitlines()
    assert len(lines) == 4 + len(TRICKY.rows)  # no value broke a line
    assert "\\x1b[31mred\\x1b[0m" in text and "\\u202eevil\\r\\t" in text
    assert "\\x00ab\\x5C" in text  # BLOB shown like DuckDB's shell
    widths = {wcswidth(line) for line in lines}
    assert len(widths) == 1  # wide characters accounted for: a straight right edge


@pytest.mark.parametrize("width", [65, 80, 100, 150, 200, 400])
def test_table_fits_width_and_says_when_cut(width: int) -> None:
    # 16 columns: 3 * 16 + 1 characters of borders, plus at least 1 per column (65)
    natural_width = wcswidth(render("table", width=0)[0].splitlines()[0])
    text, notices = render("table", width=width)
    lines = text.splitlines()
    assert all(wcswidth(line) <= width for line in lines)
    assert len(lines) == 4 + len(TRICKY.rows)
    if natural_width > width:
        assert len(notices) == 1
        assert "cut to fit a width of" in notices[0] and "--format line" in notices[0]
        assert "…" in text
    else:
        assert notices == [] and "…" not in text


def test_table_cuts_widest_column_first() -> None:
    result = simple([("x" * 60, 7)])
    text, notices = render("table", result, width=30)
    assert text.splitlines()[3] == "│ " + "x" * 21 + "… │ 7 │"
    assert notices == ["1 column cut to fit a width of 30; "
                       "use --format line or a wider terminal to see whole values"]


def test_table_too_many_columns_still_says_so() -> None:
    cols = tuple(f"c{i}" for i in range(30))
    result = simple([tuple("value" for _ in cols)], columns=cols, types=("VARCHAR",) * 30)
    text, notices = render("table", result, width=50)
    assert len(notices) == 1 and ", still " in notices[0]
    assert "value" not in text


def test_truncate_and_fit_helpers() -> None:
    assert truncate("abcdef", 6) == "abcdef"
    assert truncate("abcdef", 4) == "abc…"
    assert truncate("漢字漢字", 5) == "漢字…"
    assert wcswidth(truncate("漢字漢字", 4)) <= 4
    widths = fit_widths([50, 30, 5, 3], 40)
    assert sum(widths) == 40 and widths[2:] == [5, 3] and widths[0] >= widths[1] >= MIN_WIDTH
    assert fit_widths([10, 10], 100) == [10, 10]
    assert fit_widths([20, 20, 20], 6) == [2, 2, 2]


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.lists(st.one_of(st.none(), st.text(), st.integers()),
                                 min_size=3, max_size=3), max_size=5),
       width=st.integers(min_value=25, max_value=120))
def test_table_property_fits_and_is_clean(values: list[list[object]], width: int) -> None:
    result = ResultSet(["a", "b", "c"], ["VARCHAR"] * 3, [tuple(v) for v in values])
    text, notices = render("table", result, width=width)
    lines = text.splitlines()
    assert all(0 <= wcswidth(line) <= width for line in lines)
    assert len(lines) == 3 + (1 if values else 0) + len(values)
    assert escape_control(text.replace("\n", "")) == text.replace("\n", "")
    natural = wcswidth(render("table", result, width=0)[0].splitlines()[0])
    assert len(notices) == (natural > width)


@settings(max_examples=60, deadline=None)
@example(texts=["\u2028x\u2029", "\x85", "\x1c\x00", "\udcff", ""])
@given(texts=st.lists(st.one_of(st.none(), st.text(st.characters(codec="utf-8"))), max_size=6))
def test_json_and_csv_round_trip_any_text(texts: list[str | None]) -> None:
    result = ResultSet(["v"], ["VARCHAR"], [(t,) for t in texts])
    assert [o["v"] for o in json.loads(render("json", result)[0])] == texts
    assert [json.loads(line)["v"] for line in render("jsonl", result)[0].splitlines()] == texts
    rows = list(csv.reader(io.StringIO(render("csv", result, header=False)[0], newline="")))
    assert [r[0] for r in rows] == ["" if t is None else t for t in texts]


# --- line ----------------------------------------------------------------------------

def test_line_exact() -> None:
    result = ResultSet(["id", "long_name"], ["INTEGER", "VARCHAR"],
                       [(1, ESC_RED), (None, "a\nb")])
    text, notices = render("line", result, width=10)
    assert text == ("       id = 1\n"
                    "long_name = \\x1b[31mred\\x1b[0m\n"
                    "\n"
                    "       id = NULL\n"
                    "long_name = a\\nb\n")
    assert notices == []
    assert render("line", simple([]))[0] == ""


def test_line_tricky_is_clean() -> None:
    text, _ = render("line")
    assert "\x1b" not in text and "\u202e" not in text and "\r" not in text
    assert text.count("\n\n") == len(TRICKY.rows) - 1
    assert "ts = 2024-01-02 03:04:05.123000+00:00" in text


# --- markdown -------------------------------------------------------------------------

def test_markdown_exact() -> None:
    result = simple([("a|b", 1), ("x\ny", None), (ESC_RED, 22)])
    text, _ = render("markdown", result)
    assert text == (
        "| name               |    n |\n"
        "| ------------------ | ---: |\n"
        "| a\\|b               |    1 |\n"
        "| x\\ny               | NULL |\n"
        "| \\x1b[31mred\\x1b[0m |   22 |\n")
    headless = render("markdown", result, header=False)[0]
    assert headless == "".join(text.splitlines(keepends=True)[2:])


def test_markdown_tricky_is_clean() -> None:
    text, _ = render("markdown")
    assert "\x1b" not in text and "\u202e" not in text
    lines = text.splitlines()
    assert len(lines) == 2 + len(TRICKY.rows)
    # every row splits into the same number of cells on unescaped pipes
    counts = {line.replace("\\|", "").count("|") for line in lines}
    assert counts == {len(TRICKY.columns) + 1}
