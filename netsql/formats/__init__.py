"""Output formats: an explicit list, in the order ``--help`` and ``.mode`` show them.

Nothing registers itself on import; tests and callers may pass their own list.
"""

from __future__ import annotations

from collections.abc import Sequence

from netsql.formats.base import Formatter, OutputContext, ResultSet
from netsql.formats.data import CsvFormat, JsonFormat, JsonlFormat, escape_control
from netsql.formats.text import LineFormat, MarkdownFormat, TableFormat

FORMATS: list[Formatter] = [
    TableFormat(),
    LineFormat(),
    CsvFormat(),
    JsonFormat(),
    JsonlFormat(),
    MarkdownFormat(),
]


def format_names(formats: Sequence[Formatter] | None = None) -> list[str]:
    """Names of the formats, in order (``table`` first: the terminal default)."""
    return [f.name for f in (FORMATS if formats is None else formats)]


def get_formatter(name: str, formats: Sequence[Formatter] | None = None) -> Formatter:
    """The format called ``name`` (case-insensitive); ``KeyError`` naming the choices."""
    wanted = name.strip().lower()
    pool = FORMATS if formats is None else formats
    for f in pool:
        if f.name == wanted:
            return f
    choices = ", ".join(format_names(pool))
    raise KeyError(f"unknown output format {name!r} (choose from: {choices})")


__all__ = [
    "FORMATS",
    "Formatter",
    "OutputContext",
    "ResultSet",
    "escape_control",
    "format_names",
    "get_formatter",
]
