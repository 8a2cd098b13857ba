"""The saved-query file format: a ``.sql`` file whose header comment names the query,
says what it does and declares its typed parameters (docs/queries.md), parsed into a
SavedQuery; parameter values converted to their declared types.

Only the standard library: ``netsql --list-queries`` needs no DuckDB.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHIPPED, USER = "shipped", "user"
FIELDS = ("name", "description", "param", "example")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
PARAM_RE = re.compile(r"[a-z_][a-z0-9_]*\Z")


class QueryUsageError(Exception):
    """A one-line usage error running a saved query (the CLI exits 2)."""


class QueryFileError(QueryUsageError):
    """A query file whose header is broken."""


# -- parameter types ---------------------------------------------------------------

_UNITS = {"s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1, "m": 60, "min": 60,
          "mins": 60, "minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hrs": 3600,
          "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400,
          "w": 604800, "week": 604800, "weeks": 604800}
_INTERVAL_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*", re.I)


def _int(text: str) -> int:
    if not re.fullmatch(r"\s*[+-]?\d+\s*", text):
        raise ValueError("not a whole number")
    return int(text)


def _float(text: str) -> float:
    if not re.fullmatch(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", text):
        raise ValueError("not a number")
    return float(text)


def _bool(text: str) -> bool:
    word = text.strip().lower()
    if word in ("true", "yes", "on", "1"):
        return True
    if word in ("false", "no", "off", "0"):
        return False
    raise ValueError("not true or false")


def _timestamp(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError("not a timestamp (e.g. 2026-01-02 03:04:05, UTC)") from None
    if value.tzinfo is not None:  # netsql's timestamps are UTC without a zone
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _interval(text: str) -> dt.timedelta:
    clock = re.fullmatch(r"\s*(\d+):(\d\d)(?::(\d\d))?\s*", text)
    if clock:
        hours, minutes, secs = (int(g or 0) for g in clock.groups())
        return dt.timedelta(hours=hours, minutes=minutes, seconds=secs)
    seconds, pos = 0.0, 0
    while pos < len(text):
        part = _INTERVAL_PART.match(text, pos)
        if not part or part.group(2).lower() not in _UNITS:
            break
        seconds += float(part.group(1)) * _UNITS[part.group(2).lower()]
        pos = part.end()
    if pos == 0 or pos < len(text):
        raise ValueError("not an interval (e.g. 90s, 15 minutes, 2h, 1 day, 01:30:00)")
    return dt.timedelta(seconds=seconds)


def _list(item: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def convert(text: str) -> list[Any]:
        return [item(part.strip()) for part in text.split(",") if part.strip()]
    return convert


@dataclass(frozen=True)
class ParamType:
    name: str
    convert: Callable[[str], Any]
    placeholder: str  # for usage lines: -p since=INTERVAL
    meaning: str  # for docs/queries.md


TYPES: dict[str, ParamType] = {t.name: t for t in (
    ParamType("text", str, "TEXT", "any text (VARCHAR)"),
    ParamType("int", _int, "INT", "a whole number (INTEGER; BIGINT when large)"),
    ParamType("float", _float, "NUMBER", "a number (DOUBLE)"),
    ParamType("bool", _bool, "true|false", "true/false, yes/no, on/off, 1/0 (BOOLEAN)"),
    ParamType("timestamp", _timestamp, "TIMESTAMP", "ISO 8601 date and time; with a zone "
              "it is converted to UTC, without one it is taken as UTC (TIMESTAMP)"),
    ParamType("interval", _interval, "INTERVAL", "a duration: 90s, 15m, 2 hours, 1d 12h, "
              "01:30:00 (INTERVAL)"),
    ParamType("text[]", _list(str), "TEXT,...", "comma-separated texts (VARCHAR[])"),
    ParamType("int[]", _list(_int), "INT,...", "comma-separated whole numbers (INTEGER[])"),
)}


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # a key of TYPES
    description: str
    default: str | None = None  # the header's default, unquoted; None: NULL or required
    required: bool = False

    def convert(self, text: str) -> Any:
        try:
            return TYPES[self.type].convert(text)
        except ValueError as exc:
            raise QueryUsageError(f"parameter {self.name}: {exc}: {text!r}") from None

    @property
    def placeholder(self) -> str:
        return TYPES[self.type].placeholder

    def when(self) -> str:
        return "required" if self.required else f"default {self.default_text()}"

    def default_text(self) -> str:
        """The default as the header writes it: 'text', 10, null."""
        if self.default is None:
            return "null"
        if self.type in ("int", "float", "bool"):
            return self.default
        return "'" + self.default.replace("'", "''") + "'"


# -- query files -------------------------------------------------------------------


@dataclass(frozen=True)
class SavedQuery:
    name: str
    description: str
    params: tuple[Param, ...]
    sql: str  # the whole file, header included (valid SQL: the header is comments)
    path: str
    origin: str = SHIPPED  # 'shipped', 'user', a --queries DIR, or 'file'
    examples: tuple[str, ...] = ()
    notes: str = ""
    overrides: str | None = None  # the path of the file of the same name this replaced
    header_lines: int = 0  # lines the header takes at the top of the file

    @property
    def body(self) -> str:
        """The SQL to run: the file with its header lines blanked (line numbers kept), so
        words in the header's prose are not taken for SQL by the engine."""
        lines = self.sql.split("\n")
        return "\n" * self.header_lines + "\n".join(lines[self.header_lines:])

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name.lower()), None)

    def usage(self) -> str:
        parts = [f"netsql -q {self.name}"]
        for p in self.params:
            arg = f"-p {p.name}={p.placeholder}"
            parts.append(arg if p.required else f"[{arg}]")
        return " ".join(parts)

    def bind(self, args: Mapping[str, str], *, strict: bool = True) -> dict[str, Any]:
        """Parameter values by name: ``args`` (text, e.g. from ``-p k=v`` or ``.run``)
        converted to each declared type, defaults for the rest. ``strict``: a name this
        query does not declare is an error (else it is ignored)."""
        given = {k.lower(): v for k, v in args.items()}
        if strict:
            for key in given:
                if self.param(key) is None:
                    raise QueryUsageError(self._unknown(key))
        values: dict[str, Any] = {}
        for p in self.params:
            if p.name in given:
                try:
                    values[p.name] = p.convert(given[p.name])
                except QueryUsageError as exc:
                    raise QueryUsageError(f"{self.name}: {exc}") from None
            elif p.required:
                raise QueryUsageError(f"{self.name}: missing parameter {p.name} "
                                      f"(usage: {self.usage()})")
            else:
                values[p.name] = None if p.default is None else p.convert(p.default)
        return values

    def _unknown(self, key: str) -> str:
        names = [p.name for p in self.params]
        near = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
        hint = f"did you mean {near[0]}? " if near else ""
        known = f"parameters: {', '.join(names)}" if names else "it takes no parameters"
        return f"{self.name}: unknown parameter {key!r} ({hint}{known})"

    def help_text(self) -> str:
        """``netsql -q NAME --help``."""
        import textwrap

        out = [f"usage: {self.usage()}", "", *textwrap.wrap(self.description, 79)]
        if self.params:
            out += ["", "parameters:"]
            for p in self.params:
                out.append(f"  {p.name}={p.placeholder}")
                out += textwrap.wrap(f"{p.type}, {p.when()}: {p.description}", 79,
                                     initial_indent=" " * 6, subsequent_indent=" " * 6)
        for paragraph in self.notes.split("\n\n") if self.notes else []:
            out += ["", *textwrap.wrap(paragraph, 79)]
        if self.examples:
            out += ["", "examples:", *(f"  {e}" for e in self.examples)]
        out += ["", f"file: {self.path} ({self.origin})"]
        return "\n".join(out) + "\n"

    def used_params(self) -> set[str]:
        """The ``$names`` the SQL uses (DuckDB's parser says; imports DuckDB)."""
        import duckdb

        try:
            stmts = duckdb.extract_statements(self.sql)
        except duckdb.Error as exc:
            raise QueryFileError(f"{self.path}: {str(exc).splitlines()[0]}") from None
        return {n.lower() for s in stmts for n in s.named_parameters}

    def check(self) -> None:
        """Every ``$name`` in the SQL is declared in the header. (SQL that does not parse
        passes: the engine reports it, with its line and column, as an SQL error.)"""
        try:
            used = self.used_params()
        except QueryFileError:
            return
        missing = sorted(used - {p.name for p in self.params})
        if missing:
            raise QueryFileError(f"{self.path}: the SQL uses ${', $'.join(missing)} but the "
                                 "header declares no such parameter")


def _unquote(text: str) -> tuple[str | None, str]:
    """A default value at the start of ``text`` ('quoted', bare, or null) and the rest."""
    text = text.lstrip()
    if text.startswith("'"):
        m = re.match(r"'((?:[^']|'')*)'", text)
        if not m:
            raise ValueError("unterminated quoted default")
        return m.group(1).replace("''", "'"), text[m.end():]
    word, _, rest = text.partition(" ")
    if not word:
        raise ValueError("missing default value after '='")
    return (None if word.lower() == "null" else word), rest


def _param(text: str) -> Param:
    m = re.match(r"\s*(\S+)\s+(\S+)\s*(.*)\Z", text, re.S)
    if not m:
        raise ValueError("param needs: NAME TYPE (required) DESCRIPTION, or "
                         "NAME TYPE = DEFAULT DESCRIPTION")
    name, type_, rest = m.group(1).lower(), m.group(2).lower(), m.group(3)
    if not PARAM_RE.match(name):
        raise ValueError(f"bad parameter name {name!r} (letters, digits and _)")
    if type_ not in TYPES:
        raise ValueError(f"parameter {name}: unknown type {type_!r} (types: "
                         f"{', '.join(TYPES)})")
    if rest.startswith("(required)"):
        default, required, rest = None, True, rest[len("(required)"):]
    elif rest.startswith("="):
        default, rest = _unquote(rest[1:])
        required = False
    else:
        raise ValueError(f"parameter {name}: say '(required)' or '= DEFAULT' after the type")
    desc = rest.strip()
    if not desc:
        raise ValueError(f"parameter {name}: needs a description")
    p = Param(name, type_, desc, default, required)
    if default is not None:
        try:
            p.convert(default)
        except QueryUsageError as exc:
            raise ValueError(f"default of {exc}") from None
    return p


def parse_query(text: str, path: str, origin: str = "file", *,
                strict: bool = True) -> SavedQuery:
    """A query file's header and SQL. A broken header is a QueryFileError naming the line.
    ``strict`` (a file of the library): the name must match the file's and a description
    is required; a ``-f`` file needs neither."""
    fields: list[tuple[int, str, str]] = []  # (line number, key, value)
    notes: list[str] = []
    stem = Path(path).stem
    header_lines = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped and not fields and not notes:
            continue
        if not stripped.startswith("--"):
            break
        header_lines = lineno
        body = stripped[2:]
        m = re.match(r" ?([a-z]+):(?:\s+(.*)|\s*)\Z", body)
        if m and m.group(1) in FIELDS:
            fields.append((lineno, m.group(1), (m.group(2) or "").strip()))
        elif m and difflib.get_close_matches(m.group(1), FIELDS, n=1, cutoff=0.75):
            near = difflib.get_close_matches(m.group(1), FIELDS, n=1, cutoff=0.75)[0]
            raise QueryFileError(f"{path}: line {lineno}: unknown header field "
                                 f"{m.group(1)!r} (did you mean {near}?)")
        elif body.startswith("   ") and body.strip() and fields and not notes:
            n, key, value = fields[-1]
            fields[-1] = (n, key, f"{value} {body.strip()}".strip())
        elif fields:
            notes.append(body.strip())
    values: dict[str, str] = {}
    params: list[Param] = []
    examples: list[str] = []
    for lineno, key, value in fields:
        try:
            if key == "param":
                p = _param(value)
                if any(q.name == p.name for q in params):
                    raise ValueError(f"parameter {p.name} declared twice")
                params.append(p)
            elif key == "example":
                examples.append(value)
            elif key in values:
                raise ValueError(f"{key} given twice")
            else:
                values[key] = value
        except ValueError as exc:
            raise QueryFileError(f"{path}: line {lineno}: {exc}") from None
    name = values.get("name", stem)
    if strict and not NAME_RE.match(name):
        raise QueryFileError(f"{path}: bad query name {name!r} (lower-case letters, digits "
                             "and -)")
    if strict and name != stem:
        raise QueryFileError(f"{path}: the header names it {name!r}, the file {stem!r}: "
                             "they must agree")
    if strict and not values.get("description"):
        raise QueryFileError(f"{path}: the header needs a '-- description:' line")
    paragraphs: list[list[str]] = [[]]
    for line in notes:
        if line:
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    text_notes = "\n\n".join(" ".join(p) for p in paragraphs if p)
    return SavedQuery(name, values.get("description", ""), tuple(params), text, path, origin,
                      tuple(examples), text_notes, header_lines=header_lines)


def read_query(path: str | Path, origin: str = "file", *, strict: bool = True) -> SavedQuery:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise QueryUsageError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}")\
            from None
    return parse_query(text, str(path), origin, strict=strict)
