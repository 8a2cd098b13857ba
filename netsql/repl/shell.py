"""Running what the user typed: SQL through the Engine, dot-commands through the
command list, results through the formatters. No prompt_toolkit here: tests drive a
``Shell`` with plain streams, and ``.read`` uses the same path as the keyboard.

Cancelling: each statement runs in a worker thread while the main thread waits.
Ctrl-C (SIGINT, in the main thread) sets ``engine.state.cancel`` (a
``threading.Event`` collectors may poll during long work such as a capture window)
and calls ``engine.interrupt()`` (DuckDB's ``interrupt``), repeatedly until the worker
ends, so a query that starts after a collection is stopped too.
"""

from __future__ import annotations

import io
import os
import shlex
import textwrap
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from netsql.context import HUMAN_FORMATS
from netsql.engine import Interrupted, NetsqlError
from netsql.formats import ResultSet, escape_control, get_formatter
from netsql.formats.base import Formatter, OutputContext
from netsql.formats.text import text_width
from netsql.repl.catalog import Catalog
from netsql.repl.commands import closest, default_commands
from netsql.repl.config import Config
from netsql.repl.face import Command, CommandError, Outcome, QuitShell
from netsql.repl.pager import needs_pager, page
from netsql.repl.sqltext import split_input

if TYPE_CHECKING:
    from netsql.context import Env
    from netsql.engine import Engine, Result

#: Extra completion sources: name -> () -> (value, description) pairs.
Source = Callable[[], Iterable[tuple[str, str]]]

MAX_READ_DEPTH = 16


def caret_lines(statement: str, line: int, column: int, width: int) -> list[str]:
    """The statement line an error points into, and a caret under ``column``."""
    src = statement.split("\n")
    if not 1 <= line <= len(src):
        return []
    text, col = src[line - 1], max(column - 1, 0)
    before, after = escape_control(text[:col]), escape_control(text[col:])
    room = max(width - 3, 20)
    if text_width(before) + text_width(after) > room:  # keep the caret in view
        keep = max(room // 2, 10)
        if text_width(before) > keep:
            before = "…" + before[-(keep - 1):]
        after = after[: max(room - text_width(before), 1)]
    return ["  " + before + after, "  " + " " * text_width(before) + "^"]


class Shell:
    def __init__(self, engine: Engine, env: Env, config: Config | None = None, *,
                 commands: Sequence[Command] | None = None,
                 formats: Sequence[Formatter] | None = None,
                 sources: dict[str, Source] | None = None) -> None:
        self.engine = engine
        self.env = env
        self.config = config or Config()
        self.commands = list(default_commands() if commands is None else commands)
        self._by_name = {n: c for c in self.commands for n in c.names}
        self.formats = formats
        self.sources = dict(sources or {})
        self.catalog = Catalog(engine.tables, self._catalog_query)
        self.mode = self.config.format
        self.header = True
        self.timer = self.config.timer
        self.maxrows = self.config.maxrows
        self.pager: str | None = self.config.pager_command()
        self.output: TextIO | None = None
        self.output_path: str | None = None
        self.once_path: str | None = None
        self.capture_interfaces: list[str] | None = None
        if engine.state.cancel is None:
            engine.state.cancel = threading.Event()
        self.cancel: threading.Event = engine.state.cancel
        self._depth = 0
        self._printed = 0

    # -- names ----------------------------------------------------------------------
    def command(self, name: str) -> Command | None:
        return self._by_name.get(name.lower())

    def unknown_command(self, name: str) -> str:
        name = name.lstrip(".").lower()
        near = closest(name, list(self._by_name))
        hint = f" (did you mean {', '.join('.' + n for n in near)}?)" if near else ""
        return f"unknown command .{name}{hint}; .help lists them"

    def _catalog_query(self, sql: str) -> Sequence[tuple[Any, ...]]:
        result = self.engine.execute(sql)
        return result.data.rows if result.data is not None else []

    # -- capture: an optional object in engine.state.capture ---------------------
    def capture(self) -> Any:
        return self.engine.state.capture

    def capture_status(self) -> dict[str, Any]:
        capture = self.capture()
        if capture is None:
            return {}
        try:
            return dict(capture.status())
        except Exception:  # a broken status must not break the prompt or the toolbar
            return {}

    # -- input ----------------------------------------------------------------------
    def run_input(self, text: str, origin: str | None = None,
                  params: dict[str, Any] | None = None) -> Outcome:
        """Run typed or read input: SQL and dot-commands in order; stop at an error."""
        self._printed = 0
        try:
            for kind, chunk in split_input(text):
                if kind == "command":
                    outcome = self.run_command(chunk)
                else:
                    outcome = self.run_sql(chunk, origin, params)
                if outcome is not Outcome.OK:
                    return outcome
        except KeyboardInterrupt:  # while printing, or between statements
            self.cancel.clear()
            self.env.notice("interrupted")
            return Outcome.ERROR
        return Outcome.OK

    def run_command(self, line: str) -> Outcome:
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            self.env.error(f"{line.split()[0]}: {exc}")
            return Outcome.ERROR
        cmd = self.command(argv[0][1:])
        try:
            if cmd is None:
                raise CommandError(self.unknown_command(argv[0]))
            cmd.handler(self, argv[1:])
        except CommandError as exc:
            if str(exc):
                self.env.error(str(exc))
            return Outcome.ERROR
        except QuitShell:
            return Outcome.QUIT
        except OSError as exc:  # .read, .output: a file that cannot be opened
            where = f" {exc.filename}" if exc.filename else ""
            self.env.error(f"{argv[0]}{where}: {exc.strerror or exc}")
            return Outcome.ERROR
        except Exception as exc:
            self.env.error(f"{argv[0]}: {_internal(exc)}")
            return Outcome.ERROR
        return Outcome.OK

    def run_sql(self, sql: str, origin: str | None = None,
                params: dict[str, Any] | None = None) -> Outcome:
        if sql.strip().rstrip(";").strip().lower() in ("quit", "exit"):
            return Outcome.QUIT
        once, self.once_path = self.once_path, None
        stream: TextIO | None = None
        if once is not None:
            try:
                stream = open(os.path.expanduser(once), "w", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                self.env.error(f".once: cannot write {once}: {exc.strerror or exc}")
                return Outcome.ERROR
        try:
            for stmt in self.engine.split(sql):
                self.show(self.execute(stmt, params), stream)
        except NetsqlError as exc:
            self.report(exc, origin)
            return Outcome.ERROR
        except Exception as exc:  # a bug below us: one line, and the shell goes on
            self.env.error((f"{origin}: " if origin else "") + _internal(exc))
            return Outcome.ERROR
        finally:
            if stream is not None:
                stream.close()
            changes = catalog_changes(sql)
            if changes:
                self.catalog.invalidate(functions="functions" in changes)
        return Outcome.OK

    def read_file(self, path: str) -> None:
        if self._depth >= MAX_READ_DEPTH:
            raise CommandError(f".read: nested too deeply ({MAX_READ_DEPTH} files)")
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            text = f.read()
        self._depth += 1
        try:
            outcome = self.run_input(text, origin=path)
        finally:
            self._depth -= 1
        if outcome is Outcome.ERROR:
            raise CommandError("")

    # -- running a statement ---------------------------------------------------------
    def execute(self, stmt: str, params: dict[str, Any] | None = None) -> Result:
        """``engine.execute`` in a worker thread; Ctrl-C cancels it (raises Interrupted)."""
        cancel = self.cancel
        cancel.clear()
        done = threading.Event()
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["result"] = self.engine.execute(stmt, params)
            except BaseException as exc:  # handed to the main thread
                box["error"] = exc
            finally:
                done.set()

        worker = threading.Thread(target=work, name="netsql-statement", daemon=True)
        worker.start()
        waited = 0
        while not done.is_set():
            # Everything that can take a second Ctrl-C is inside the try: the worker
            # must have ended before the next statement may use the connection.
            try:
                if cancel.is_set():
                    self.engine.interrupt()  # again: the query may start after collection
                    waited += 1
                    if waited == 20:
                        self.env.notice("cancelling (waiting for the collection to stop)")
                done.wait(0.1)
            except KeyboardInterrupt:
                cancel.set()
        if cancel.is_set():
            cancel.clear()
            raise Interrupted("interrupted")
        if "error" in box:
            raise box["error"]
        result: Result = box["result"]
        return result

    # -- output -----------------------------------------------------------------------
    def terminal_size(self) -> os.terminal_size:
        try:
            return os.get_terminal_size(self.env.stdout.fileno())
        except (AttributeError, OSError, ValueError):
            return os.terminal_size((self.env.width or 100, 24))

    def _target(self, stream: TextIO | None = None) -> tuple[TextIO, bool]:
        """Where data goes, and whether that is the terminal."""
        out = stream or self.output
        if out is not None:
            return out, False
        return self.env.stdout, bool(self.env.stdout_isatty)

    def human_listing(self) -> bool:
        """Listings (.tables, .schema) as wrapped text rather than through a format."""
        out, tty = self._target()
        return tty and self.mode == "table"

    def set_output(self, path: str | None) -> None:
        stream = None
        if path is not None:
            stream = open(os.path.expanduser(path), "w", encoding="utf-8")  # noqa: SIM115
        if self.output is not None:
            self.output.close()
        self.output, self.output_path = stream, path

    def show(self, result: Result, stream: TextIO | None = None) -> None:
        for w in result.warnings:
            self.env.warn(w)
        if result.data is not None:
            self.write_data(result.data, stream)
        if self.timer:
            n = -1 if result.data is None else len(result.data.rows)
            rows = "" if n < 0 else f", {n} row{'' if n == 1 else 's'}"
            print(f"Time: {result.collect_seconds + result.run_seconds:.3f} s (collect "
                  f"{result.collect_seconds:.3f} s, query {result.run_seconds:.3f} s{rows})",
                  file=self.env.stderr)

    def write_data(self, data: ResultSet, stream: TextIO | None = None) -> None:
        """One result set through the current format (and the pager, on a terminal)."""
        out, tty = self._target(stream)
        formatter = get_formatter(self.mode, self.formats)
        total = len(data.rows)
        cut = tty and self.maxrows > 0 and total > self.maxrows
        if cut:
            data = ResultSet(data.columns, data.types, data.rows[: self.maxrows])
        size = self.terminal_size()
        notices: list[str] = []
        ctx = OutputContext(tty=tty, width=size.columns if tty else 0, header=self.header,
                            notice=notices.append, whole_values=".mode line")
        buf = io.StringIO()
        if self._printed and formatter.name in HUMAN_FORMATS:
            buf.write("\n")
        formatter.write(data, buf, ctx)
        self._printed += 1
        text = buf.getvalue()
        if not (tty and self.pager and needs_pager(text, size.lines)
                and page(text, self.pager, self.env.stderr)):
            out.write(text)
            out.flush()
        for n in notices:
            self.env.notice(n)
        if cut:
            self.env.notice(f"showing the first {self.maxrows} of {total} rows "
                            "(.maxrows N to change, 0 for all)")

    def write_text(self, text: str) -> None:
        """Shell text (help, settings) to the terminal, whatever .output says."""
        self.env.stdout.write("\n".join(escape_control(line) for line in text.split("\n")))
        self.env.stdout.flush()

    def wrap(self, text: str, indent: int = 0, first: int = 0) -> str:
        width = max(self.terminal_size().columns - 1, 40)
        return textwrap.fill(escape_control(text), width=width, initial_indent=" " * first,
                             subsequent_indent=" " * indent) or " " * first

    def write_listing(self, rows: Sequence[tuple[str, str]],
                      middle: Sequence[str] | None = None, indent: int = 0) -> None:
        """``name  [middle]  description`` lines, descriptions wrapped to the terminal."""
        if not rows:
            return
        name_w = max(text_width(escape_control(n)) for n, _ in rows) + 2
        mid_w = max(len(m) for m in middle) + 2 if middle else 0
        lines = []
        for i, (name, desc) in enumerate(rows):
            left = " " * indent + escape_control(name).ljust(name_w)
            if middle:
                left += middle[i].ljust(mid_w)
            body = self.wrap(desc, indent=len(left), first=len(left))
            lines.append(left + body[len(left):])
        self.env.stdout.write("\n".join(lines) + "\n")
        self.env.stdout.flush()

    # -- errors -------------------------------------------------------------------------
    def report(self, exc: NetsqlError, origin: str | None = None) -> None:
        if isinstance(exc, Interrupted):
            self.env.notice("interrupted")
            return
        if exc.statement and exc.line is not None and exc.column is not None:
            for line in caret_lines(exc.statement, exc.line, exc.column,
                                    self.terminal_size().columns):
                print(line, file=self.env.stderr)
        self.env.error((f"{origin}: " if origin else "") + str(exc))


def _internal(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"internal error: {type(exc).__name__}" + (f": {text[0]}" if text else "")


_SCHEMA_WORDS = frozenset({"create", "drop", "alter", "attach", "detach", "import", "use",
                           "comment", "load", "install", "set", "reset"})
_FUNCTION_WORDS = frozenset({"load", "install", "attach", "detach", "use"})


def catalog_changes(sql: str) -> set[str]:
    """What the statements in ``sql`` may change: {"tables"}, {"tables", "functions"}."""
    from netsql.repl.sqltext import tokens

    firsts, first = set(), True
    for tok in tokens(sql):
        if first and tok.kind == "word":
            firsts.add(tok.lower)
        first = tok.text == ";"
    out = set()
    if firsts & _SCHEMA_WORDS:
        out.add("tables")
    if firsts & _FUNCTION_WORDS or ("create" in firsts and "macro" in sql.lower()):
        out.add("functions")
    return out
