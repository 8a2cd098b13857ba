"""Rows rendered by DuckDB itself: the csv, json and jsonl text of a row as one SQL
expression, so a big result is written at DuckDB's speed, not Python's (10,000,000 rows:
about 0.8 s instead of 10 s).

The text is byte for byte what the Python encoders of :mod:`netsql.formats.data` write
(tests/test_streaming.py compares the two on tricky values). Only column types whose
text is known exactly are rendered here (integers, DECIMAL, BOOLEAN, DOUBLE, VARCHAR,
TIMESTAMP, DATE); a result with any other column, and any output to a terminal (where
control characters must be made visible), goes through the Python encoders instead.
The caller wraps the statement as ``SELECT <expression> FROM (<statement>) AS q(c0,
c1, ...)``: columns are named by position, so duplicate or odd column names do not
matter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from netsql.formats.data import json_str, unique_keys
from netsql.schema import sql_string

_INTEGER = re.compile(r"U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)")
_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")

# What a JSON string of netsql's may not carry raw (formats.data: json escapes C0, we
# escape DEL, C1, line/paragraph separators and bidi controls too); RE2 syntax.
_JSON_SPECIAL = r"'[\x00-\x1f\x7f-\x9f\x{2028}\x{2029}\x{202a}-\x{202e}\x{2066}-\x{2069}]'"
# ...of those, what DuckDB's to_json() leaves raw (DEL and beyond; it escapes C0 itself).
_JSON_RAW = r"'[\x7f-\x9f\x{2028}\x{2029}\x{202a}-\x{202e}\x{2066}-\x{2069}]'"
# One character of such a string as JSON: the named escapes, else \uXXXX.
_JSON_CHAR = (
    "CASE ch WHEN '\"' THEN '\\\"' WHEN '\\' THEN '\\\\' WHEN E'\\n' THEN '\\n' "
    "WHEN E'\\r' THEN '\\r' WHEN E'\\t' THEN '\\t' WHEN E'\\b' THEN '\\b' "
    "WHEN E'\\f' THEN '\\f' ELSE CASE WHEN regexp_matches(ch, " + _JSON_SPECIAL + ") "
    "THEN printf('\\u%04x', ord(ch)) ELSE ch END END")


def column_names(n: int) -> str:
    """The alias list the caller gives the wrapped statement: ``c0, c1, ...``."""
    return ", ".join(f"c{i}" for i in range(n))


def _kind(sql_type: str) -> str | None:
    t = sql_type.strip().upper()
    if _INTEGER.fullmatch(t):
        return "int"
    m = _DECIMAL.fullmatch(t)
    if m and int(m.group(1)) > int(m.group(2)):  # DECIMAL(2,2) 0.5 is ".50" in DuckDB
        return "int"
    if t in ("BOOLEAN", "DOUBLE", "VARCHAR", "TIMESTAMP", "DATE"):
        return t.lower()
    return None


def _time_text(col: str, kind: str) -> str:
    """A TIMESTAMP or DATE as the Python encoders write it (NULL stays NULL): Python's
    isoformat() ('T', microseconds only when there are some); infinity as the datetime
    DuckDB hands Python for it (the largest or smallest one); a year outside 1-9999,
    which Python's datetime cannot hold, as DuckDB's text."""
    if kind == "date":
        return (f"CASE WHEN isfinite({col}) OR {col} IS NULL THEN CAST({col} AS VARCHAR) "
                f"WHEN {col} > DATE '2000-01-01' THEN '9999-12-31' ELSE '0001-01-01' END")
    return (f"CASE WHEN NOT isfinite({col}) THEN CASE WHEN {col} > TIMESTAMP '2000-01-01' "
            "THEN '9999-12-31T23:59:59.999999' ELSE '0001-01-01T00:00:00' END "
            f"WHEN year({col}) NOT BETWEEN 1 AND 9999 THEN CAST({col} AS VARCHAR) "
            f"WHEN microsecond({col}) % 1000000 = 0 THEN strftime({col}, '%Y-%m-%dT%H:%M:%S') "
            f"ELSE strftime({col}, '%Y-%m-%dT%H:%M:%S.%f') END")


def _csv_field(col: str, kind: str) -> str:
    if kind in ("timestamp", "date"):
        return f"coalesce({_time_text(col, kind)}, '')"
    if kind == "int":
        return f"coalesce(CAST({col} AS VARCHAR), '')"
    if kind == "boolean":
        return f"CASE WHEN {col} THEN 'true' WHEN NOT {col} THEN 'false' ELSE '' END"
    if kind == "double":  # DuckDB writes a negative NaN as -nan, Python as nan
        return (f"CASE WHEN {col} IS NULL THEN '' WHEN isnan({col}) THEN 'nan' "
                f"ELSE CAST({col} AS VARCHAR) END")
    # Python's csv module quotes (QUOTE_MINIMAL, "\r\n" line ends) a field with any of
    # these; four contains() are faster than one regular expression.
    special = " OR ".join(f"contains({col}, {c})" for c in ("','", "'\"'", "E'\\n'", "E'\\r'"))
    return (f"CASE WHEN {col} IS NULL THEN '' WHEN {special} "
            f"THEN '\"' || replace({col}, '\"', '\"\"') || '\"' ELSE {col} END")


def _json_field(col: str, kind: str) -> str:
    if kind in ("timestamp", "date"):  # the text holds nothing JSON escapes
        return f"coalesce('\"' || {_time_text(col, kind)} || '\"', 'null')"
    if kind == "int":
        return f"coalesce(CAST({col} AS VARCHAR), 'null')"
    if kind == "boolean":
        return f"CASE WHEN {col} THEN 'true' WHEN NOT {col} THEN 'false' ELSE 'null' END"
    if kind == "double":
        return (f"CASE WHEN {col} IS NULL OR NOT isfinite({col}) THEN 'null' "
                f"ELSE CAST({col} AS VARCHAR) END")
    # DuckDB's to_json() writes a string as Python's json does, except that it leaves
    # DEL, C1, U+2028/9 and bidi controls raw and writes some C0 escapes in upper case
    # (\u001B): a string with any of those (to_json's text then holds "\u00"; a literal
    # backslash-u in the text sends a string here too, harmlessly) is written a
    # character at a time. ASCII text is told by its byte and character counts, without
    # a regular expression. Measured on 5,000,000 'host-N' strings: 0.29 s of CPU against
    # 0.83 s for one regular expression over every string (jsonl of four columns: 1.7 s
    # against 2.2 s; DuckDB's COPY (FORMAT json): 2.0 s).
    plain = (f"CASE WHEN strlen({col}) = length({col}) THEN NOT contains({col}, chr(127)) "
             f"ELSE NOT regexp_matches({col}, {_JSON_RAW}) END "
             f"AND NOT contains(to_json({col})::VARCHAR, '\\u00')")
    return (f"CASE WHEN {col} IS NULL THEN 'null' "
            f"WHEN {plain} THEN to_json({col})::VARCHAR ELSE '\"' || array_to_string("
            f"list_transform(string_split({col}, ''), lambda ch: {_JSON_CHAR}), '') || '\"' "
            "END")


def _literal(text: str) -> str:
    """``text`` as a SQL string literal (an E'' one when it holds a line end)."""
    if "\n" not in text and "\r" not in text:
        return sql_string(text)
    return "E'" + (text.replace("\\", "\\\\").replace("'", "''").replace("\n", "\\n")
                   .replace("\r", "\\r")) + "'"


def _concat(parts: list[tuple[bool, str]]) -> str:
    """``concat(...)`` of (is_literal, text) parts, neighbouring literals merged (one flat
    concat is three times faster than a chain of ||)."""
    merged: list[tuple[bool, str]] = []
    for lit, text in parts:
        if lit and merged and merged[-1][0]:
            merged[-1] = (True, merged[-1][1] + text)
        else:
            merged.append((lit, text))
    return "concat(" + ", ".join(_literal(t) if lit else t for lit, t in merged) + ")"


def row_sql(fmt: str, columns: Sequence[str], types: Sequence[str]) -> str | None:
    """The SQL expression over ``c0, c1, ...`` that renders one row as ``fmt`` text,
    line end included; None when a column's type or the format has no exact rendering.

    csv: RFC 4180 fields, ``\\r\\n``. jsonl: one object and ``\\n``. json: ``,\\n`` then
    the object (the caller drops the first separator and adds the brackets).
    """
    kinds = [_kind(t) for t in types]
    if not columns or any(k is None for k in kinds):
        return None
    cols = [f"c{i}" for i in range(len(columns))]
    parts: list[tuple[bool, str]] = []
    if fmt == "csv":
        for i, (c, k) in enumerate(zip(cols, kinds, strict=True)):
            parts += [(True, ",")] if i else []
            parts.append((False, _csv_field(c, k or "")))
        if len(cols) == 1:  # Python's csv writes a lone empty field as ""
            empty = "c0 IS NULL OR c0 = ''" if kinds[0] == "varchar" else "c0 IS NULL"
            parts = [(False, f"CASE WHEN {empty} THEN '\"\"' ELSE {parts[0][1]} END")]
        return _concat([*parts, (True, "\r\n")])
    if fmt in ("json", "jsonl"):
        parts = [(True, ",\n")] if fmt == "json" else []
        for i, (key, c, k) in enumerate(zip(unique_keys(list(columns)), cols, kinds,
                                             strict=True)):
            parts.append((True, ("{" if i == 0 else ", ") + json_str(key) + ": "))
            parts.append((False, _json_field(c, k or "")))
        parts.append((True, "}\n" if fmt == "jsonl" else "}"))
        return _concat(parts)
    return None


def text_of(batch: Any) -> bytes:
    """The bytes of the one string column of an Arrow record batch, concatenated."""
    import pyarrow as pa

    col = batch.column(0)
    n = len(col)
    if n == 0:
        return b""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        offset_type = pa.int64() if pa.types.is_large_string(col.type) else pa.int32()
        _, offsets, data = col.buffers()
        ends = pa.Array.from_buffers(offset_type, n + 1, [None, offsets], offset=col.offset)
        start, end = ends[0].as_py(), ends[n].as_py()
        return memoryview(data)[start:end].tobytes() if data is not None else b""
    return "".join(col.to_pylist()).encode("utf-8")
