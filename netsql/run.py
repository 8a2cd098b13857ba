"""The statement runner: one parsed command line -> sources -> Engine -> output.

Statements run through the same Engine path whether they come from -e, -f, -q, stdin
or a resident netsql's socket. cli.py parses and dispatches here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from netsql import signals
from netsql.collect import State
from netsql.context import Env, ExitStatus

#: Engines of a finished one-shot command run as the netsql process itself (not the
#: shell, a watch, the server or a test's in-process call), None for one a resident
#: netsql ran: main() exits at once.
FINISHED: list[Any] = []


def exit_now(status: int) -> None:
    """End a finished one-liner without tearing the interpreter down: freeing every row
    object and module one by one costs 25-50 ms (100,000 DNS transactions: 50 ms),
    which the kernel does at once. Output is flushed and DuckDB closed first (it
    removes any files it spilled); captures were stopped by then."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    for engine in FINISHED:
        if engine is None:  # a command a resident netsql ran
            continue
        try:
            engine.con.close()
        except Exception:  # closing is best effort on the way out
            pass
    os._exit(status)


def run(args: argparse.Namespace, argv: Sequence[str], env: Env,
        resident: State | None = None) -> ExitStatus:
    """Run one parsed command line (``argv``: its words, for a resident netsql).
    ``resident``: the engine state of ``netsql serve`` (its capture and caches) when
    the command came through its socket."""

    fmt = args.format or "table"
    if args.help:
        return _help(args, env)
    from netsql.backends import BackendError, chosen

    try:
        chosen()  # NETSQL_BACKEND names a backend of this platform
    except BackendError as exc:
        env.error(str(exc))
        return ExitStatus.USAGE
    if args.list_tables:
        from netsql.output import list_tables

        return list_tables(env, fmt, header=not args.no_header)
    if args.list_queries:
        return _list_queries(env, fmt, args)
    if args.params and not args.sources:
        env.error("-p needs -q NAME, or -f FILE whose header declares parameters")
        return ExitStatus.USAGE
    if args.changes and args.watch is None:
        env.error("--changes goes with --watch")
        return ExitStatus.USAGE

    if not args.safe and resident is None:
        from netsql.dbconfig import configured_safe

        args.safe = configured_safe()
    if args.safe and (refused := _safe_refusal(args, env)) is not None:
        return refused
    if args.pack and (args.sources or args.params):
        env.error("--pack runs the pack's queries: it does not go with -e, -f, -q or -p")
        return ExitStatus.USAGE
    if args.pack:  # always here: a pack is a file of this user's (netsql/osquery/packs.py)
        from netsql.osquery.packs import run_pack

        return ExitStatus(run_pack(args, env))
    if resident is None and not args.safe:  # a resident engine is not locked: run here
        from netsql.serve import client  # light: os and stat until a socket is there

        if client.forwardable(args, env):
            status = client.run_there(argv, args, env)
            if status is not None:
                if env.stdout is sys.stdout:  # the netsql process itself: exit at once
                    FINISHED.append(None)
                return ExitStatus(status)
    sources: list[tuple[str, str]] = [(s.tag, str(s)) for s in (args.sources or [])]
    if not sources:
        if env.stdin_isatty and args.watch is not None:
            env.error("--watch needs statements to run: -e SQL, -f FILE or -q NAME "
                      "(in the shell: .watch)")
            return ExitStatus.USAGE
        if env.stdin_isatty:
            import netsql.engine  # noqa: F401  (DuckDB loaded before signals unwind)
            from netsql.repl.start import shell

            signals.arm()
            return shell(env, args)
        sources = [("stdin", env.stdin.read())]

    texts: list[tuple[str, str]] = []
    for kind, value in sources:
        if kind == "file":
            try:
                with open(value, encoding="utf-8") as f:
                    texts.append((value, f.read()))
            except (OSError, UnicodeDecodeError) as exc:
                env.error(f"cannot read {value}: {getattr(exc, 'strerror', None) or exc}")
                return ExitStatus.USAGE
        else:
            texts.append((kind, value))
    runs: list[tuple[str, str, dict[str, Any] | None]] = [(o, t, None) for o, t in texts]
    if args.params or any(kind in ("query", "file") for kind, _ in sources):
        from netsql.queries import QueryUsageError, prepare_runs

        try:
            runs = prepare_runs([(k, o, t) for (k, _), (o, t) in zip(sources, texts,
                                                                      strict=True)],
                                args.params or [], args.queries or [], warn=env.warn)
        except QueryUsageError as exc:
            env.error(str(exc))
            return ExitStatus.USAGE

    if args.safe and any(dot_line(text) for _, text, _ in runs):
        from netsql.repl.script import unsafe_command

        for _, text, _ in runs:
            if (line := unsafe_command(text)) is not None:
                env.error(f"--safe runs no dot-command that reads or writes a file or runs "
                          f"a command: {line} refused (docs/security.md)")
                return ExitStatus.USAGE

    from netsql.engine import Engine, NetsqlError
    from netsql.output import DOCUMENT_FORMATS, Printer

    signals.arm()  # DuckDB is loaded: from here a signal unwinds (netsql.signals)

    watching = args.watch is not None
    from netsql.launch import capture_state

    state, status = capture_state(args, env, [t for _, t, _ in runs] if watching else None,
                                  resident)
    if status is not None:
        return status
    if args.intel_db:
        state.intel_db = args.intel_db
    if args.safe:
        state.safe = True
    if args.history:
        state.history = args.history
    engine = state.spare_engine or Engine(state=state)
    state.spare_engine = None
    engine.state = state
    if args.osquery:
        from netsql.osquery.dialect import set_mode

        set_mode(engine, True)
    if resident is not None:  # netsql serve interrupts it when the client goes away
        state.interrupt = engine.con.interrupt
    if watching:
        from netsql.watch import run_watch

        try:
            return ExitStatus(run_watch(env, engine, runs, interval=args.watch,
                                        fmt=args.format, changes=args.changes,
                                        header=not args.no_header))
        finally:
            if state.capture is not None:
                state.capture.stop()
    if resident is None and env.stdout is sys.stdout:
        FINISHED.append(engine)  # kept alive until main() exits at once
    if any(dot_line(text) for _, text, _ in runs):  # `echo .tables | netsql`
        from netsql.repl.script import has_commands, run_script

        if any(has_commands(text) for _, text, _ in runs):
            return ExitStatus(run_script(env, engine, runs, fmt, header=not args.no_header))
    several = fmt in DOCUMENT_FORMATS and sum(
        engine.row_statements(text) for _, text, _ in runs) > 1
    printer = Printer(env, fmt, header=not args.no_header, several=several,
                      maxrows=args.maxrows)
    said: set[str] = set()  # a warning is given once per command, not per statement
    for origin, text, params in runs:
        try:
            for result in engine.run(text, params, printer.render):
                for w in result.warnings:
                    if w not in said:
                        said.add(w)
                        env.warn(w)
                printer.print(result)
        except NetsqlError as exc:
            printer.finish()
            where = f"{origin}: " if origin not in ("sql", "stdin") else ""
            env.error(where + str(exc))
            return ExitStatus.ERROR
    printer.finish()
    return ExitStatus.SUCCESS


def _safe_refusal(args: argparse.Namespace, env: Env) -> ExitStatus | None:
    """--safe: no file named on the command line is read (as root, under sudo), and no
    interactive shell (its pager and .output run and write as the caller)."""
    named = [flag for flag, given in (
        ("-f", any(s.tag == "file" for s in args.sources or [])),
        ("-q PATH", any(s.tag == "query" and ("/" in s or s.endswith(".sql"))
                        for s in args.sources or [])),
        ("--queries", args.queries), ("--intel-db", args.intel_db), ("--pcap", args.pcap),
        ("--history", args.history), ("--pack", args.pack))
        if given]
    if named:
        env.error(f"--safe reads no file named on the command line: {', '.join(named)} "
                  "refused (docs/security.md)")
        return ExitStatus.USAGE
    if not args.sources and env.stdin_isatty:
        env.error("--safe runs statements (-e, -q NAME or standard input), not the "
                  "interactive shell (docs/security.md)")
        return ExitStatus.USAGE
    return None


def dot_line(text: str) -> bool:
    """Might ``text`` hold a dot-command (a line starting with '.')? A cheap first look."""
    return any(line.lstrip().startswith(".") for line in text.splitlines())


def _help(args: argparse.Namespace, env: Env) -> ExitStatus:
    names = [str(s) for s in args.sources or [] if s.tag == "query"]
    if not names:
        from netsql.flags import build_parser

        build_parser().print_help(env.stdout)
        return ExitStatus.SUCCESS
    from netsql.queries import QueryUsageError, query_help

    try:
        env.stdout.write(query_help(names[0], args.queries or [], warn=env.warn))
    except QueryUsageError as exc:
        env.error(str(exc))
        return ExitStatus.USAGE
    return ExitStatus.SUCCESS


def _list_queries(env: Env, fmt: str, args: argparse.Namespace) -> ExitStatus:
    import json

    from netsql.formats.base import ResultSet
    from netsql.output import Printer
    from netsql.queries import QueryUsageError, listing_json, listing_rows, load_queries

    try:
        found = load_queries(args.queries or [], warn=env.warn)
    except QueryUsageError as exc:
        env.error(str(exc))
        return ExitStatus.USAGE
    if fmt == "json":
        json.dump(listing_json(found), env.stdout, indent=2)
        env.stdout.write("\n")
        return ExitStatus.SUCCESS
    columns, rows = listing_rows(found)
    printer = Printer(env, fmt, header=not args.no_header)
    printer.formatter.write(ResultSet(columns, ["VARCHAR"] * len(columns), rows), env.stdout,
                            printer.ctx)
    return ExitStatus.SUCCESS


