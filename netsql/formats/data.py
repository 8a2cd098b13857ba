"""Data formats for pipelines: csv, json, jsonl; and the value encoders they share.

Choices (documented in ``--help`` via each formatter's description):

* NULL: JSON ``null``; an empty CSV field.
* BOOLEAN: JSON ``true``/``false``; CSV ``true``/``false`` (as DuckDB's COPY writes them).
* DECIMAL: a JSON number written exactly (no float rounding); plain digits in CSV.
* DOUBLE NaN / ±inf: JSON ``null`` (JSON has no such numbers); ``nan``/``inf`` in CSV.
* TIMESTAMP/DATE/TIME: ISO 8601 text (``datetime.isoformat()``, a ``T`` between date
  and time). INTERVAL: a number of seconds (e.g. ``0.0125``), handy for arithmetic in jq.
* BLOB: lower-case hex text without prefix (``"0a1bff"``): readable for packet bytes and
  trivially reversible (``bytes.fromhex``).
* LIST/ARRAY: JSON arrays; STRUCT/MAP: JSON objects (non-string keys become text).
  In CSV they are written as that JSON text.
* Anything else (UUID, IP addresses, ...): ``str(value)``.
* Duplicate column names (``SELECT 1 AS a, 2 AS a``) become distinct JSON keys: the first
  keeps its name, later ones get ``_1``, ``_2``, ... (skipping names already in use).
* JSON strings keep non-ASCII text as is, but C0 controls (JSON requires it), DEL, C1
  controls, U+2028/U+2029 (so JSON Lines split only on real newlines), bidi
  overrides/isolates and lone surrogates are written as ``\\uXXXX``: the
  decoded data is identical, and the raw bytes cannot drive a terminal.
* CSV follows RFC 4180: minimal quoting, ``\\r\\n`` line ends, a header row unless
  disabled. Values are written raw when piped (data fidelity); on a terminal, control
  characters are made visible with :func:`escape_control`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, TextIO

from netsql.escape import escape_control
from netsql.formats.base import OutputContext, ResultSet

# What a JSON string may not carry raw (beyond the C0 controls json already escapes).
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_encode_str = json.encoder.encode_basestring  # C-accelerated, keeps non-ASCII as is


def json_str(s: str) -> str:
    out: str = _encode_str(s)
    if _JSON_UNSAFE.search(out) is not None:
        out = _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", out)
    return out


def interval_seconds(td: dt.timedelta) -> int | float:
    whole = td.days * 86400 + td.seconds
    return whole + td.microseconds / 1e6 if td.microseconds else whole


def decimal_text(d: Decimal) -> str:
    return format(d, "f") if d.is_finite() else str(d)


def json_value(v: Any) -> str:
    """One value as JSON text (see the module docstring for the mapping)."""
    if v is None:
        return "null"
    if isinstance(v, str):
        return json_str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return int.__repr__(v)
    if isinstance(v, float):
        return float.__repr__(v) if math.isfinite(v) else "null"
    if isinstance(v, Decimal):
        return decimal_text(v) if v.is_finite() else "null"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(json_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(
            f"{json_str(k if isinstance(k, str) else plain_text(k))}: {json_value(x)}"
            for k, x in v.items()) + "}"
    if isinstance(v, dt.timedelta):
        return repr(interval_seconds(v))
    return json_str(plain_text(v))


def plain_text(v: Any) -> str:
    """One value as unescaped text, for CSV (NULL -> empty string)."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return int.__repr__(v)
    if isinstance(v, float):
        return float.__repr__(v)
    if isinstance(v, Decimal):
        return decimal_text(v)
    if isinstance(v, dt.date | dt.time):  # datetime is a date
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return repr(interval_seconds(v))
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).hex()
    if isinstance(v, list | tuple | dict):
        return json_value(v)
    return str(v)


def unique_keys(columns: list[str]) -> list[str]:
    """Column names made unique for JSON objects: a, a -> a, a_1 (skipping taken names)."""
    taken = set(columns)
    seen: set[str] = set()
    keys: list[str] = []
    for name in columns:
        key = name
        if key in seen:
            n = 1
            while f"{name}_{n}" in taken:
                n += 1
            key = f"{name}_{n}"
            taken.add(key)
        seen.add(key)
        keys.append(key)
    return keys


def _json_objects(result: ResultSet) -> Iterator[list[str]]:
    """The rows as JSON objects, a chunk at a time."""
    prefixes = [json_str(k) + ": " for k in unique_keys(result.columns)]
    for chunk in result.chunks():
        yield ["{" + ", ".join(p + json_value(v) for p, v in zip(prefixes, row, strict=True))
               + "}" for row in chunk]


def write_text(out: TextIO, data: bytes) -> None:
    """Bytes DuckDB rendered, to ``out``: straight to its binary buffer when it has one."""
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        out.flush()
        buffer.write(data)
    else:
        out.write(data.decode("utf-8"))


#: Value types the csv module writes as plain_text does (None as an empty field).
_AS_IS = frozenset({str, int, type(None)})


class CsvFormat:
    name = "csv"
    description = ("comma-separated values (RFC 4180, header row, NULL as empty field, "
                   "lists as JSON text)")
    rendered = True  # off a terminal DuckDB may render the rows (formats.sqlrow)

    def write(self, result: ResultSet, out: TextIO, ctx: OutputContext) -> None:
        writer = csv.writer(out, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
        fix = escape_control if ctx.tty else None
        if ctx.header:
            writer.writerow([fix(c) for c in result.columns] if fix else result.columns)
        if result.text is not None:
            for data in result.text:
                write_text(out, data)
            return
        for chunk in result.chunks():
            # A chunk's text is made whole and written at once: the csv module writes a
            # row at a time, and each write to netsql serve's output is a call of Python
            # code (40,000 rows: ~20 ms).
            text = io.StringIO()
            writer = csv.writer(text, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
            if fix:
                writer.writerows([fix(plain_text(v)) for v in row] for row in chunk)
            elif chunk:
                # A column of text, integers and NULLs only is written by the csv module
                # as plain_text writes it: only the other columns go through plain_text
                # (2,000 processes: 25 ms of a one-liner's 40 ms of csv otherwise).
                columns = list(zip(*chunk, strict=True))
                if all(_AS_IS.issuperset(map(type, col)) for col in columns):
                    writer.writerows(chunk)
                else:
                    writer.writerows(zip(*(col if _AS_IS.issuperset(map(type, col))
                                           else map(plain_text, col) for col in columns),
                                         strict=True))
            out.write(text.getvalue())


class JsonFormat:
    name = "json"
    description = "one JSON array of objects (keys in column order, native JSON types)"
    rendered = True

    def write(self, result: ResultSet, out: TextIO, ctx: OutputContext) -> None:
        empty = True
        if result.text is not None:  # each row comes as ",\n{...}"
            for data in result.text:
                if data:
                    write_text(out, b"[\n" + data[2:] if empty else data)
                    empty = False
        else:
            for objs in _json_objects(result):
                if objs:
                    out.write(("[\n" if empty else ",\n") + ",\n".join(objs))
                    empty = False
        out.write("[]\n" if empty else "\n]\n")


class JsonlFormat:
    name = "jsonl"
    description = "JSON Lines: one JSON object per row"
    rendered = True

    def write(self, result: ResultSet, out: TextIO, ctx: OutputContext) -> None:
        if result.text is not None:
            for data in result.text:
                write_text(out, data)
            return
        for objs in _json_objects(result):
            if objs:
                out.write("\n".join(objs) + "\n")
