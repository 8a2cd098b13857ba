"""What a dot-command is, and what it sees of the shell: ``Shell`` (shell.py) runs
the commands (commands.py) and each command acts on the shell, so the commands name
this face of it, not the class: the two modules then need not import each other."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from netsql.context import Env
    from netsql.engine import Engine
    from netsql.errors import NetsqlError
    from netsql.formats.base import Formatter, ResultSet
    from netsql.repl.catalog import Catalog
    from netsql.repl.config import Config


Handler = Callable[["ShellFace", list[str]], None]


@dataclass(frozen=True)
class Command:
    name: str  # without the dot
    args: str  # usage, e.g. "[FORMAT]"; "..." at the end: the last argument repeats
    help: str  # one line, for .help
    handler: Handler
    complete: tuple[tuple[str, ...], ...] = ()  # per argument: choices and @sources
    aliases: tuple[str, ...] = ()
    doc: str = ""  # more, for `.help NAME` and docs/shell.md

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def usage(self) -> str:
        return f".{self.name} {self.args}".rstrip()

    def arg_spec(self, index: int) -> tuple[str, ...]:
        """What argument ``index`` (0-based) can be."""
        if index < len(self.complete):
            return self.complete[index]
        if self.complete and self.args.rstrip().endswith("..."):
            return self.complete[-1]
        return ()


class CommandError(Exception):
    """A one-line error from a dot-command. An empty message: already reported."""


class QuitShell(Exception):
    pass


class Outcome(enum.Enum):
    OK = "ok"
    ERROR = "error"
    QUIT = "quit"


class ShellFace(Protocol):
    engine: Engine
    env: Env
    config: Config
    commands: list[Command]
    formats: Sequence[Formatter] | None
    catalog: Catalog
    mode: str
    header: bool
    timer: bool
    maxrows: int
    pager: str | None
    once_path: str | None
    capture_interfaces: list[str] | None

    def command(self, name: str) -> Command | None: ...

    def unknown_command(self, name: str) -> str: ...

    def capture(self) -> Any: ...

    def capture_status(self) -> dict[str, Any]: ...

    def run_sql(self, sql: str, origin: str | None = None,
                params: dict[str, Any] | None = None) -> Outcome: ...

    def read_file(self, path: str) -> None: ...

    def human_listing(self) -> bool: ...

    def set_output(self, path: str | None) -> None: ...

    def write_data(self, data: ResultSet, stream: Any = None) -> None: ...

    def write_text(self, text: str) -> None: ...

    def wrap(self, text: str, indent: int = 0, first: int = 0) -> str: ...

    def write_listing(self, rows: Sequence[tuple[str, str]],
                      middle: Sequence[str] | None = None, indent: int = 0) -> None: ...

    def report(self, exc: NetsqlError, origin: str | None = None) -> None: ...
