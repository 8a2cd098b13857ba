"""What every output format receives: a result and where/how to write it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from netsql.context import stderr_notice


@dataclass
class ResultSet:
    """One statement's result: column names, DuckDB type names, rows."""

    columns: list[str]
    types: list[str]
    rows: Sequence[tuple[Any, ...]]


@dataclass
class OutputContext:
    """Where output goes. ``tty``: stdout is a terminal (escape control characters,
    fit ``width``); ``notice`` writes one line to stderr (e.g. "3 values cut to fit");
    ``whole_values``: how the user asks for uncut values, as notices name it (the shell
    says ``.mode line``)."""

    tty: bool = False
    width: int = 80
    header: bool = True
    notice: Callable[[str], None] = field(default=stderr_notice)
    whole_values: str = "--format line"


class Formatter(Protocol):
    name: str
    description: str

    def write(self, result: ResultSet, out: TextIO, ctx: OutputContext) -> None: ...
