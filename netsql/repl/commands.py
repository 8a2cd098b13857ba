"""Dot-commands: one explicit list of :class:`Command` objects.

``.help``, completion and docs/shell.md are all generated from the list that
:func:`default_commands` returns; nothing registers itself at import time. To add a
command (``.run NAME k=v``, ``.queries``, ``.watch``), write a handler
``(shell, args) -> None`` and pass ``default_commands() + [Command(...)]`` to the
:class:`~netsql.repl.shell.Shell`. A handler reports a problem by raising
:class:`CommandError` (one line); ``complete`` tells the completer what each argument
is: literal choices, or ``@table``, ``@format``, ``@command``, ``@file``,
``@interface``, or any extra source given to the completer (``@query``).
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from netsql.formats import ResultSet, escape_control, format_names
from netsql.repl.config import DEFAULT_PAGER
from netsql.repl.face import Command, CommandError, QuitShell

if TYPE_CHECKING:
    from netsql.repl.face import ShellFace

def closest(name: str, names: Sequence[str]) -> list[str]:
    """Names that look like ``name``: same prefix first, then similar spellings."""
    pre = [n for n in names if n.startswith(name) or name.startswith(n)] if name else []
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.7)
    return list(dict.fromkeys(pre + close))[:3]


def _on_off(args: list[str], what: str) -> bool:
    if len(args) != 1 or args[0].lower() not in ("on", "off"):
        raise CommandError(f"usage: .{what} on|off")
    return args[0].lower() == "on"


# -- handlers --------------------------------------------------------------------


def cmd_help(shell: ShellFace, args: list[str]) -> None:
    if args:
        cmd = shell.command(args[0].lstrip("."))
        if cmd is None:
            raise CommandError(shell.unknown_command(args[0]))
        lines = [cmd.usage(), f"    {cmd.help}"]
        if cmd.doc:
            lines += ["", *(f"    {line}" for line in cmd.doc.splitlines())]
        shell.write_text("\n".join(lines) + "\n")
        return
    rows = [(", ".join("." + n for n in c.names) + (" " + c.args if c.args else ""), c.help)
            for c in shell.commands]
    shell.write_listing(rows)
    shell.write_text("SQL statements end with ';'. Tab completes, Ctrl-R searches history, "
                     "Ctrl-C cancels, Ctrl-D quits.\n")


def cmd_tables(shell: ShellFace, args: list[str]) -> None:
    if len(args) > 1:
        raise CommandError("usage: .tables [PATTERN]")
    tables = shell.catalog.tables()
    if args:
        pattern = args[0].replace("%", "*").replace("_", "?").lower()
        if not any(c in pattern for c in "*?["):
            pattern = f"*{pattern}*"
        tables = [t for t in tables if fnmatch.fnmatchcase(t.name.lower(), pattern)]
    if shell.human_listing():
        shell.write_listing([(t.name, t.description or f"({t.kind})") for t in tables])
        return
    shell.write_data(ResultSet(["name", "kind", "columns", "description"],
                               ["VARCHAR", "VARCHAR", "INTEGER", "VARCHAR"],
                               [(t.name, t.kind, len(t.columns), t.description)
                                for t in tables]))


def cmd_schema(shell: ShellFace, args: list[str]) -> None:
    if len(args) > 1:
        raise CommandError("usage: .schema [TABLE]")
    if args:
        table = shell.catalog.table(args[0])
        if table is None:
            names = [t.name for t in shell.catalog.tables()]
            near = closest(args[0].lower(), names)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise CommandError(f"no such table: {args[0]}{hint}")
        tables = [table]
    else:
        tables = shell.catalog.tables()
    if shell.human_listing():
        for i, t in enumerate(tables):
            head = f"{t.name} ({t.kind})" + (f": {t.description}" if t.description else "")
            shell.write_text(("\n" if i else "") + shell.wrap(head) + "\n")
            shell.write_listing([(c.name, c.description) for c in t.columns],
                                middle=[c.type for c in t.columns], indent=2)
        return
    rows = [(t.name, c.name, c.type, c.description) for t in tables for c in t.columns]
    shell.write_data(ResultSet(["table", "column", "type", "description"],
                               ["VARCHAR"] * 4, rows))


def cmd_mode(shell: ShellFace, args: list[str]) -> None:
    names = format_names(shell.formats)
    if not args:
        shell.write_text(f"mode: {shell.mode} (choose from: {', '.join(names)})\n")
        return
    if len(args) != 1 or args[0].lower() not in names:
        raise CommandError(f"unknown output format {args[0]!r} (choose from: "
                           f"{', '.join(names)})" if args else "usage: .mode FORMAT")
    shell.mode = args[0].lower()


def cmd_headers(shell: ShellFace, args: list[str]) -> None:
    shell.header = _on_off(args, "headers")


def cmd_timer(shell: ShellFace, args: list[str]) -> None:
    shell.timer = _on_off(args, "timer")


def cmd_maxrows(shell: ShellFace, args: list[str]) -> None:
    if not args:
        shell.write_text(f"maxrows: {shell.maxrows or 'all'}\n")
        return
    try:
        n = int(args[0])
        if n < 0 or len(args) != 1:
            raise ValueError
    except ValueError:
        raise CommandError("usage: .maxrows N (0 shows every row)") from None
    shell.maxrows = n


def cmd_pager(shell: ShellFace, args: list[str]) -> None:
    if not args:
        shell.write_text(f"pager: {shell.pager or 'off'}\n")
        return
    word = " ".join(args)
    if word.lower() == "off":
        shell.pager = None
    elif word.lower() == "on":
        shell.pager = shell.config.pager_command() or (
            os.environ.get("PAGER", "").strip() or DEFAULT_PAGER)
    else:
        shell.pager = word


def cmd_output(shell: ShellFace, args: list[str]) -> None:
    if len(args) > 1:
        raise CommandError("usage: .output [FILE|stdout]")
    shell.set_output(None if not args or args[0] == "stdout" else args[0])


def cmd_once(shell: ShellFace, args: list[str]) -> None:
    if len(args) != 1:
        raise CommandError("usage: .once FILE")
    shell.once_path = args[0]


def cmd_read(shell: ShellFace, args: list[str]) -> None:
    if len(args) != 1:
        raise CommandError("usage: .read FILE")
    shell.read_file(args[0])


def _queries(shell: ShellFace) -> list[Any]:
    from netsql.queries import QueryUsageError, load_queries

    try:
        return load_queries(shell.engine.state.query_dirs, warn=shell.env.warn)
    except QueryUsageError as exc:
        raise CommandError(str(exc)) from None


def cmd_run(shell: ShellFace, args: list[str]) -> None:
    """Run a saved query with KEY=VALUE parameters, bound as prepared-statement values."""
    from netsql.queries import QueryUsageError, parse_assignments, resolve

    if not args:
        raise CommandError("usage: .run NAME [KEY=VALUE ...] (.queries lists them)")
    try:
        q = resolve(args[0], _queries(shell))
        params = q.bind(parse_assignments(args[1:]))
    except QueryUsageError as exc:
        raise CommandError(str(exc)) from None
    from netsql.repl.face import Outcome

    if shell.run_sql(q.body, origin=q.name, params=params) is Outcome.ERROR:
        raise CommandError("")


def cmd_queries(shell: ShellFace, args: list[str]) -> None:
    """List the saved queries (optionally those whose name contains PATTERN)."""
    qs = _queries(shell)
    if args:
        qs = [q for q in qs if args[0].lower() in q.name]
    shell.write_listing([(q.name, q.description) for q in qs])


def cmd_capture(shell: ShellFace, args: list[str]) -> None:
    capture = shell.capture()
    if capture is None:
        raise CommandError("capture is not available")
    sub = args[0].lower() if args else "status"
    rest = args[1:]
    try:
        if sub == "status" and not rest:
            pass
        elif sub == "start":
            capture.start(rest or shell.capture_interfaces or None)
        elif sub == "stop" and not rest:
            capture.stop()
        elif sub == "interface" and rest:
            shell.capture_interfaces = rest
            if shell.capture_status().get("running"):
                capture.stop()
                capture.start(rest)
        elif sub == "hold" and len(rest) == 1 and rest[0].lower() in ("on", "off"):
            capture.hold_wanted = rest[0].lower() == "on"  # docs/dns.md: the hold
            if shell.capture_status().get("running"):
                capture.stop()
                capture.start(shell.capture_interfaces or None)
        else:
            raise CommandError("usage: .capture [status | start [IFACE...] | stop | "
                               "interface IFACE... | hold on|off]")
    except CommandError:
        raise
    except Exception as exc:  # the capture layer's own failure, as one line
        raise CommandError(f"capture {sub}: {exc}") from None
    status = shell.capture_status()
    if isinstance(status.get("started"), int | float):  # an epoch: a UTC ISO 8601 time
        import datetime as dt

        status["started"] = dt.datetime.fromtimestamp(status["started"], dt.UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
    keys = [k for k in ("running", "interfaces", "messages", "dropped", "evicted")
            if k in status] + [k for k in status if k not in
                               ("running", "interfaces", "messages", "dropped", "evicted")]
    if shell.human_listing():
        from netsql.formats.text import cell_text

        shell.write_listing([(k, cell_text(status[k])) for k in keys])
        return
    shell.write_data(ResultSet(keys, [""] * len(keys), [tuple(status[k] for k in keys)]))


def cmd_quit(shell: ShellFace, args: list[str]) -> None:
    raise QuitShell()


def typed_text(args: list[str]) -> str:
    """What followed the command name, as typed. ``Shell.run_command`` splits the line
    the way a Unix shell would before calling a handler, which drops SQL's quotes
    (``'LISTEN'`` becomes ``LISTEN``); the line itself is still in that frame. Falls back
    to the split words when called some other way."""
    frame = sys._getframe(1)
    while frame is not None:
        line = frame.f_locals.get("line") if frame.f_code.co_name == "run_command" else None
        if isinstance(line, str) and line.lstrip().startswith("."):
            parts = line.strip().split(None, 1)
            return parts[1] if len(parts) > 1 else ""
        frame = frame.f_back  # type: ignore[assignment]
    return " ".join(args)


def cmd_watch(shell: ShellFace, args: list[str]) -> None:
    from netsql.errors import NetsqlError
    from netsql.watch import DEFAULT_INTERVAL, NothingToWatch, Watch, describe

    text = typed_text(args)
    first, _, rest = text.partition(" ")
    seconds = DEFAULT_INTERVAL
    try:
        seconds = float(first)
        text = rest
    except ValueError:
        pass
    if not text.strip() or not 0 < seconds <= 86400:
        raise CommandError("usage: .watch [SECONDS] STATEMENT (SECONDS: more than 0, "
                           f"default {DEFAULT_INTERVAL:g})")
    if not (shell.env.stdout_isatty and shell.env.stdin_isatty):
        raise CommandError(".watch needs a terminal (netsql --watch streams results "
                           "into pipes)")
    watch = Watch(shell.engine, [("sql", text, None)])
    try:
        refresh = watch.refresh()
    except NothingToWatch as exc:
        raise CommandError(str(exc)) from None
    except NetsqlError as exc:
        shell.report(exc)
        raise CommandError("") from None
    for w in refresh.warnings:
        shell.env.warn(w)
    from netsql.watch.screen import run_screen

    run_screen(watch, refresh, interval=seconds, title=describe([("sql", text, None)]))


def cmd_osquery(shell: ShellFace, args: list[str]) -> None:
    from netsql.errors import NetsqlError
    from netsql.osquery.dialect import is_on, set_mode

    if args:
        try:
            set_mode(shell.engine, _on_off(args, "osquery"))
        except NetsqlError as exc:
            raise CommandError(f".osquery: {exc}") from None
        shell.catalog.invalidate(functions=True)
    shell.write_text(f"osquery mode: {'on' if is_on(shell.engine) else 'off'}\n")


def default_commands() -> list[Command]:
    """The shell's dot-commands, in the order ``.help`` lists them."""
    return [
        Command("help", "[COMMAND]", "List the commands, or explain one", cmd_help,
                (("@command",),)),
        Command("tables", "[PATTERN]", "List the tables and views a statement can name "
                "(PATTERN: a substring, or a LIKE or "
                "glob pattern)", cmd_tables, (("@table",),)),
        Command("schema", "[TABLE]", "Show the columns of TABLE (or of every table) with "
                "types and descriptions", cmd_schema, (("@table",),)),
        Command("mode", "[FORMAT]", "Set the output format: "
                + ", ".join(format_names()), cmd_mode, (("@format",),)),
        Command("headers", "on|off", "Show or leave out header rows (table, csv)",
                cmd_headers, (("on", "off"),)),
        Command("timer", "on|off", "Print collection and query times after each statement",
                cmd_timer, (("on", "off"),)),
        Command("maxrows", "[N]", "Show at most N rows of a result on the terminal (0: all)",
                cmd_maxrows, doc="The table format shows the first and the last rows and "
                "the row count, as the DuckDB shell does; other formats say in a notice "
                "when rows were left out. Output sent to a file with .output or .once is "
                "never cut."),
        Command("pager", "[on|off|COMMAND]", "Page results taller than the terminal",
                cmd_pager, (("on", "off", "less -SRFX"),),
                doc="on: the config's pager, else $PAGER, else `less -SRFX`; COMMAND runs "
                "with sh -c and reads the result on its standard input."),
        Command("output", "[FILE|stdout]", "Send results to FILE (truncated first), or "
                "back to the terminal", cmd_output, (("stdout", "@file"),)),
        Command("once", "FILE", "Send the results of the next SQL input to FILE", cmd_once,
                (("@file",),)),
        Command("read", "FILE", "Run the SQL and dot-commands in FILE", cmd_read,
                (("@file",),), doc="Stops at the first error in FILE; a .quit in FILE "
                "ends reading FILE, not the shell."),
        Command("capture", "[status|start|stop|interface|hold] [IFACE...|on|off]",
                "Show or control packet capture (DNS)", cmd_capture,
                (("status", "start", "stop", "interface", "hold"), ("@interface",)),
                doc="`.capture start [IFACE...]` starts capturing (on the interfaces "
                "given, else those of `.capture interface`, else the default); "
                "`.capture interface IFACE...` sets them (restarting a running capture). The "
                "status shows `started` as a UTC ISO 8601 time. `.capture hold on` holds "
                "each DNS query until its process is known (as `--hold`: an iptables rule, "
                "docs/dns.md); `off` goes back to passive attribution."),
        Command("watch", "[SECONDS] STATEMENT", "Re-run STATEMENT every SECONDS (default 2) "
                "in a full-screen live view", cmd_watch,
                doc="New rows are marked +, rows that went away stay marked - for one "
                "refresh. Keys: q quits back to the prompt, p pauses, d shows counters "
                "(bytes, packets, ...) as per-second rates, < and > choose the sort "
                "column, r reverses it, space refreshes now. See docs/watch.md."),
        Command("run", "NAME [KEY=VALUE...]", "Run a saved query with its parameters",
                cmd_run, (("@query",),),
                doc="Parameters are typed as the query declares and bound as prepared-"
                "statement values, never pasted into the SQL. `.queries` lists the "
                "queries; docs/query-reference.md describes the shipped ones."),
        Command("queries", "[PATTERN]", "List the saved queries", cmd_queries, (("@query",),)),
        Command("osquery", "[on|off]", "osquery mode: osquery's table names first, its "
                "SQLite dialect", cmd_osquery, (("on", "off"),),
                doc="Off, osquery's tables stay reachable as osquery.TABLE. See "
                "docs/osquery.md."),
        Command("quit", "", "Leave the shell (also Ctrl-D)", cmd_quit, aliases=("exit",)),
    ]


def commands_md(commands: Sequence[Command]) -> str:
    """The dot-command reference table for docs/shell.md."""
    def cell(text: str) -> str:
        return escape_control(text).replace("|", "\\|")

    out = ["| command | what it does |", "| --- | --- |"]
    for c in commands:
        names = ", ".join(f"`.{n}{' ' + c.args if c.args else ''}`" for n in c.names)
        out.append(f"| {cell(names)} | {cell(c.help + ('. ' + c.doc if c.doc else ''))} |")
    return "\n".join(out) + "\n"
