"""Command line: parse flags -> Engine -> format -> exit status.

Thin on purpose: statements run through the same Engine path whether they come
from -e, -f, stdin or the interactive shell. Nothing here imports the REPL's
libraries unless the shell is started.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from enum import IntEnum
from typing import Any, TextIO

from netsql import __version__, signals


class ExitStatus(IntEnum):
    """Documented exit statuses (docs/cli.md)."""

    SUCCESS = 0
    ERROR = 1  # an SQL or runtime error (bad statement, unreadable file, capture failed)
    USAGE = 2  # bad flags or arguments
    INTERRUPTED = 130  # Ctrl-C (SIGINT)


class Env:
    """Where the CLI reads and writes; tests build their own. (A plain class: the
    dataclasses module costs a one-liner 9 ms to import.)"""

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None,
                 stderr: TextIO | None = None, stdin_isatty: bool | None = None,
                 stdout_isatty: bool | None = None, width: int | None = None) -> None:
        self.stdin: TextIO = stdin if stdin is not None else sys.stdin
        self.stdout: TextIO = stdout if stdout is not None else sys.stdout
        self.stderr: TextIO = stderr if stderr is not None else sys.stderr
        self.stdin_isatty = _isatty(self.stdin) if stdin_isatty is None else stdin_isatty
        self.stdout_isatty = _isatty(self.stdout) if stdout_isatty is None else stdout_isatty
        if width is None:
            if self.stdout_isatty:
                import shutil

                width = shutil.get_terminal_size((100, 24)).columns
            else:
                width = 1_000_000
        self.width: int = width

    def error(self, message: str) -> None:
        from netsql.formats import escape_control

        print(f"netsql: error: {escape_control(message)}", file=self.stderr)

    def warn(self, message: str) -> None:
        from netsql.formats import escape_control

        print(f"netsql: warning: {escape_control(message)}", file=self.stderr)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _source(kind: str) -> type:
    class Tagged(str):
        tag = kind

    return Tagged


FORMAT_NAMES = ("table", "line", "csv", "json", "jsonl", "markdown")
DNS_BUFFER = 100_000


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="netsql", add_help=False,
        description="SQL over this host's processes, sockets, routes, interfaces and DNS.",
        epilog="With no SQL and a terminal, netsql opens the interactive shell. "
        "Exit status: 0 success, 1 SQL or runtime error, 2 usage error, 130 interrupted.",
    )
    p.add_argument("-h", "--help", action="store_true",
                   help="show this help and exit (with -q NAME: the query's parameters)")
    p.add_argument("-e", "--execute", dest="sources", action="append", metavar="SQL",
                   type=_source("sql"), help="run SQL (repeatable; runs in order with -f)")
    p.add_argument("-f", "--file", dest="sources", action="append", metavar="FILE",
                   type=_source("file"), help="run the statements in FILE (repeatable)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--format", choices=FORMAT_NAMES, help="output format "
                     "(default: table)")
    fmt.add_argument("--json", dest="format", action="store_const", const="json",
                     help="same as --format json")
    fmt.add_argument("--csv", dest="format", action="store_const", const="csv",
                     help="same as --format csv")
    p.add_argument("--no-header", action="store_true", help="omit the header row "
                   "(table, csv)")
    p.add_argument("--list-tables", action="store_true",
                   help="list the virtual tables (with --format json: the whole schema)")
    dns = p.add_argument_group("DNS capture (the dns_queries table)")
    dns.add_argument("--capture", type=_seconds, metavar="SECONDS",
                     help="capture DNS live for SECONDS, then run the statements "
                     "(needs root or CAP_NET_RAW)")
    dns.add_argument("-i", "--interface", action="append", metavar="IFACE",
                     help="capture on IFACE only (repeatable; default: every interface, "
                     "loopback included)")
    dns.add_argument("--pcap", action="append", metavar="FILE",
                     help="read dns_queries from a pcap or pcapng file instead of the "
                     "live interfaces (repeatable)")
    dns.add_argument("--dns-port", action="append", type=_port, metavar="PORT",
                     help="DNS server port to decode (repeatable; default 53; 5353 is "
                     "mDNS, 5355 LLMNR)")
    dns.add_argument("--dns-buffer", type=_positive, default=DNS_BUFFER, metavar="N",
                     help="keep at most N live DNS transactions, evicting the oldest "
                     "(default 100000)")
    p.add_argument("--intel-db", metavar="PATH", help="the threat-intel database read by the "
                   "intel table and the flagged view (default: $NETSQL_INTEL_DB, else "
                   "$XDG_DATA_HOME/netsql/intel.duckdb; lists are kept with netsql intel)")
    saved = p.add_argument_group("saved queries (docs/queries.md)")
    saved.add_argument("-q", "--query", dest="sources", action="append", metavar="NAME",
                       type=_source("query"), help="run the saved query NAME (or a query "
                       "file's path), in order with -e and -f")
    saved.add_argument("-p", "--param", dest="params", action="append", metavar="KEY=VALUE",
                       help="a parameter of the -q query or of -f files that declare it "
                       "(repeatable)")
    saved.add_argument("--list-queries", action="store_true",
                       help="list the saved queries (with --format json: their parameters)")
    saved.add_argument("--queries", action="append", metavar="DIR",
                       help="also load saved queries from DIR, overriding others of the "
                       "same name (repeatable)")
    live = p.add_argument_group("live view (docs/watch.md)")
    live.add_argument("--watch", nargs="?", const=2.0, type=_seconds, metavar="SECONDS",
                      help="re-run the statements every SECONDS (default 2): a full-screen "
                      "view on a terminal (q quits), else a stream of results until "
                      "SIGINT/SIGTERM")
    live.add_argument("--changes", action="store_true",
                      help="with --watch: write only the rows added and removed since the "
                      "last refresh, each with an \"action\" field (off a terminal)")
    p.add_argument("--safe", action="store_true",
                   help="SQL reads netsql's tables only: no file or network access, no "
                   "settings changed (for sudo rules; config key safe; docs/security.md)")
    p.add_argument("--local", action="store_true",
                   help="run here even when a resident netsql (netsql serve) listens")
    p.add_argument("--version", action="version", version=f"netsql {__version__}")
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"seconds must be between 0 and 86400: {text!r}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (1-65535): {text!r}")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None, env: Env | None = None) -> int:
    env = env or Env()
    if env is not None and env.stdout is sys.stdout:
        # `netsql ... | head` ends quietly, like other Unix tools.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        # SIGINT, SIGTERM, SIGHUP end netsql at once until arm(), then unwind, so a
        # capture removes its firewall rules (netsql.signals).
        signals.install()  # (python -m netsql and the netsql command did it first)
    try:
        words = list(sys.argv[1:] if argv is None else argv)
        if words[:1] == ["intel"]:  # netsql intel import|list|remove|path (docs/intel.md)
            import duckdb  # noqa: F401  (loaded before a signal may unwind)

            from netsql.intel.cli import main as intel_main

            signals.arm()  # (netsql.signals; what an import must undo is in a finally)
            return intel_main(words[1:], env)
        if words[:1] == ["serve"]:  # the resident engine (docs/serve.md)
            import duckdb  # noqa: F401

            from netsql.serve import main as serve_main

            signals.arm()
            return serve_main(words[1:], env)
        status = int(_main(words, env))
        if _FINISHED:
            _exit_now(status)
        return status
    except KeyboardInterrupt:
        env.error("interrupted")
        return ExitStatus.INTERRUPTED


#: Engines of a finished one-shot command run as the netsql process itself (not the
#: shell, a watch, the server or a test's in-process call): main() exits at once.
_FINISHED: list[Any] = []


def _exit_now(status: int) -> None:
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
    for engine in _FINISHED:
        try:
            engine.con.close()
        except Exception:  # closing is best effort on the way out
            pass
    os._exit(status)


def _main(argv: Sequence[str], env: Env, resident: dict[str, Any] | None = None
          ) -> ExitStatus:
    """Run one command line. ``resident``: the engine state of ``netsql serve`` (its
    capture and caches) when the command came through its socket."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        env.error(f"{exc} (see netsql --help)")
        return ExitStatus.USAGE
    except SystemExit as exc:  # --version
        return ExitStatus.SUCCESS if not exc.code else ExitStatus.USAGE

    fmt = args.format or "table"
    if args.help:
        return _help(parser, args, env)
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
    if resident is None and not args.safe:  # a resident engine is not locked: run here
        from netsql import resident as client  # light: os and stat until a socket is there

        if client.forwardable(args, env):
            status = client.run_there(argv, args, env)
            if status is not None:
                return ExitStatus(status)
    sources: list[tuple[str, str]] = [(s.tag, str(s)) for s in (args.sources or [])]
    if not sources:
        if env.stdin_isatty and args.watch is not None:
            env.error("--watch needs statements to run: -e SQL, -f FILE or -q NAME "
                      "(in the shell: .watch)")
            return ExitStatus.USAGE
        if env.stdin_isatty:
            import netsql.engine  # noqa: F401  (DuckDB loaded before signals unwind)
            from netsql.launch import shell

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

    from netsql.engine import Engine, NetsqlError
    from netsql.output import Printer

    signals.arm()  # DuckDB is loaded: from here a signal unwinds (netsql.signals)

    watching = args.watch is not None
    from netsql.launch import capture_state

    state, status = capture_state(args, env, [t for _, t, _ in runs] if watching else None,
                                  resident)
    if status is not None:
        return status
    if args.intel_db:
        state["intel_db"] = args.intel_db
    if args.safe:
        state["safe"] = True
    engine = resident.pop("spare_engine", None) if resident is not None else None
    if engine is None:
        engine = Engine(state=state)
    engine.state = state
    if resident is not None:  # serve.py interrupts it when the client goes away
        state["interrupt"] = engine.con.interrupt
    if watching:
        from netsql.watch import run_watch

        try:
            return ExitStatus(run_watch(env, engine, runs, interval=args.watch,
                                        fmt=args.format, changes=args.changes,
                                        header=not args.no_header))
        finally:
            capture = state.get("capture")
            if capture is not None:
                capture.stop()  # type: ignore[attr-defined]
    if resident is None and env.stdout is sys.stdout:
        _FINISHED.append(engine)  # kept alive until main() exits at once
    printer = Printer(env, fmt, header=not args.no_header)
    for origin, text, params in runs:
        try:
            for result in engine.run(text, params):
                for w in result.warnings:
                    env.warn(w)
                printer.print(result)
        except NetsqlError as exc:
            where = f"{origin}: " if origin not in ("sql", "stdin") else ""
            env.error(where + str(exc))
            return ExitStatus.ERROR
    return ExitStatus.SUCCESS


def _safe_refusal(args: argparse.Namespace, env: Env) -> ExitStatus | None:
    """--safe: no file named on the command line is read (as root, under sudo), and no
    interactive shell (its pager and .output run and write as the caller)."""
    named = [flag for flag, given in (
        ("-f", any(s.tag == "file" for s in args.sources or [])),
        ("-q PATH", any(s.tag == "query" and ("/" in s or s.endswith(".sql"))
                        for s in args.sources or [])),
        ("--queries", args.queries), ("--intel-db", args.intel_db), ("--pcap", args.pcap))
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


def _help(parser: argparse.ArgumentParser, args: argparse.Namespace, env: Env) -> ExitStatus:
    names = [str(s) for s in args.sources or [] if s.tag == "query"]
    if not names:
        parser.print_help(env.stdout)
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


if __name__ == "__main__":
    raise SystemExit(main())
