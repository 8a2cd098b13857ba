"""``netsql intel import|list|remove|path``: keep the threat-intel lists (docs/intel.md).

Errors are one line naming the file and line; exit statuses are netsql's (0 success,
1 a bad file or database problem, 2 usage, 130 interrupted).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from netsql.context import FORMAT_NAMES, Env, ExitStatus, Parser, UsageError
from netsql.intel.files import FORMATS, Batch, ListFile, ParseError, parse
from netsql.paths import intel_db

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
SAMPLES = (("sample-domains.txt", "sample-domains"), ("sample-ips.txt", "sample-ips"))
if TYPE_CHECKING:
    from netsql.intel.db import Imported

_SOURCE_RE = re.compile(r"[^\x00-\x1f\x7f]{1,100}")


def build_parser() -> argparse.ArgumentParser:
    db_help = ("the intel database (default: $NETSQL_INTEL_DB, else "
               "$XDG_DATA_HOME/netsql/intel.duckdb)")
    common = Parser(add_help=False)
    common.add_argument("--intel-db", metavar="PATH", default=argparse.SUPPRESS, help=db_help)
    p = Parser(prog="netsql intel", description="Keep offline threat-intel lists; "
                "queries read them as the intel table, intel_* functions and the flagged "
                "view.", epilog="Exit status: 0 success, 1 a bad file or database problem, "
                "2 usage error.")
    p.add_argument("--intel-db", metavar="PATH", help=db_help)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    imp = sub.add_parser("import", parents=[common], help="import (or re-import) a list",
                         description="Load FILE's indicators as the list SOURCE, replacing "
                         "what SOURCE held; a bad line imports nothing. FILE may be gzip "
                         "or a one-file zip; '-' reads standard input.")
    imp.add_argument("file", nargs="?", metavar="FILE")
    imp.add_argument("--source", metavar="NAME", help="the list's name (default: FILE's "
                     "name without its extension)")
    imp.add_argument("--format", choices=("auto", *FORMATS), default="auto",
                     help="FILE's format (default: auto, from its header and lines)")
    imp.add_argument("--sample", action="store_true", help="import the sample lists shipped "
                     "with netsql (sources sample-domains and sample-ips)")
    ls = sub.add_parser("list", parents=[common], help="the imported lists",
                        description="The imported lists: indicators by kind, when imported, "
                        "from which file.")
    fmt = ls.add_mutually_exclusive_group()
    fmt.add_argument("--format", choices=FORMAT_NAMES, help="output format (default: table)")
    fmt.add_argument("--json", dest="format", action="store_const", const="json")
    fmt.add_argument("--csv", dest="format", action="store_const", const="csv")
    ls.add_argument("--no-header", action="store_true", help="omit the header row")
    rm = sub.add_parser("remove", parents=[common], help="remove lists",
                        description="Remove the lists SOURCE... and their indicators.")
    rm.add_argument("sources", nargs="+", metavar="SOURCE")
    sub.add_parser("path", parents=[common], help="print the intel database's path")
    return p


def main(argv: Sequence[str], env: Env | None = None) -> int:
    env = env or Env()
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(env.stdout):
            args = parser.parse_args(list(argv))
    except UsageError as exc:
        env.error(f"{exc} (see netsql intel --help)")
        return ExitStatus.USAGE
    except SystemExit as exc:  # --help
        return ExitStatus.SUCCESS if not exc.code else ExitStatus.USAGE
    if not args.command:
        env.error("missing COMMAND: import, list, remove or path (see netsql intel --help)")
        return ExitStatus.USAGE
    from netsql.intel import db

    path = intel_db(args.intel_db)
    try:
        return int(COMMANDS[args.command](args, env, path))
    except (db.IntelDbError, ParseError) as exc:
        env.error(str(exc))
        return ExitStatus.ERROR
    except KeyboardInterrupt:
        env.error("interrupted")
        return ExitStatus.INTERRUPTED
    except Exception as exc:  # duckdb.Error and the like: still one line, no traceback
        import duckdb

        if not isinstance(exc, duckdb.Error):
            raise
        env.error(f"intel database {path}: {str(exc).splitlines()[0]}")
        return ExitStatus.ERROR


def _summary(batch: Batch, done: Imported, file: str, source: str) -> str:
    detail = ", ".join(f"{n:,} {k}" for k, n in sorted(done.kinds.items())) or "none"
    extra = [f"{n:,} {what} skipped" for what, n in sorted(batch.skipped.items())]
    if done.duplicates:
        extra.append(f"{done.duplicates:,} duplicates dropped")
    if done.replaced is not None:
        extra.append(f"replaced the {done.replaced:,} indicators it held")
    tail = f"; {'; '.join(extra)}" if extra else ""
    return (f"imported {done.indicators:,} indicators ({detail}) from {file} as source "
            f"'{source}' ({batch.format}{tail})")


def cmd_import(args: argparse.Namespace, env: Env, path: str) -> ExitStatus:
    from netsql.intel import db

    if args.sample:
        if args.file or args.source:
            env.error("--sample imports the shipped lists: give no FILE or --source")
            return ExitStatus.USAGE
        jobs = [(str(SAMPLE_DIR / name), source, "auto") for name, source in SAMPLES]
    else:
        if not args.file:
            env.error("import needs a FILE (or --sample) (see netsql intel import --help)")
            return ExitStatus.USAGE
        if args.file == "-" and not args.source:
            env.error("--source NAME is needed to import standard input")
            return ExitStatus.USAGE
        source = args.source or Path(args.file).name.split(".")[0] or Path(args.file).name
        if not _SOURCE_RE.fullmatch(source) or source != source.strip():
            env.error(f"not a usable source name: {source!r} (1 to 100 printable characters)")
            return ExitStatus.USAGE
        jobs = [(args.file, source, args.format)]
    # Files are streamed into one transaction (bounded memory whatever their size): a
    # bad line anywhere rolls every list back, leaving the database as it was.
    opened: list[tuple[ListFile, str, str]] = []
    for file, source, fmt in jobs:
        try:
            if file == "-":
                stream = getattr(env.stdin, "buffer", None)
                if stream is None:  # a test's StringIO
                    stream = io.BytesIO(env.stdin.read().encode())
                reader = ListFile("<stdin>", stream)
            else:
                reader = ListFile(file)
        except OSError as exc:
            for r, *_ in opened:
                r.close()
            env.error(f"cannot read {file}: {exc.strerror or exc}")
            return ExitStatus.USAGE
        except ParseError:
            for r, *_ in opened:
                r.close()
            raise
        opened.append((reader, source, fmt))
    parsed: list[tuple[Batch, str, str, str]] = []
    with contextlib.ExitStack() as stack:
        for reader, *_ in opened:
            stack.callback(reader.close)
        con = db.open_db(path)
        stack.callback(con.close)
        with db.Import(con, os.path.dirname(os.path.abspath(path))) as job:
            for n, (reader, source, fmt) in enumerate(opened):
                try:
                    batch = parse(reader.path, fmt, reader, spill=job.stage(n))
                except OSError as exc:
                    raise ParseError(reader.path, None,
                                     f"cannot read: {exc.strerror or exc}") from None
                where = (reader.path if reader.path == "<stdin>"
                         else os.path.abspath(reader.path))
                parsed.append((batch, source, where, reader.sha256))
            done = job.commit(parsed)
    for (reader, source, _), (batch, *_), imported in zip(opened, parsed, done, strict=True):
        file = reader.path
        env.notice(_summary(batch, imported, file, source))
        if not imported.indicators:
            env.warn(f"{file} holds no indicators: source '{source}' is now empty")
    return ExitStatus.SUCCESS


def cmd_list(args: argparse.Namespace, env: Env, path: str) -> ExitStatus:
    from netsql.formats.base import ResultSet
    from netsql.intel import db
    from netsql.output import Printer

    fmt = args.format or "table"
    if not os.path.exists(path):
        rows: list[tuple[object, ...]] = []
        columns = ["source", "format", "indicators", "kinds", "imported_at", "path"]
        types = ["VARCHAR"] * len(columns)
        env.notice(f"no lists imported yet ({path} does not exist)")
    else:
        con = db.open_read_only(path)
        try:
            columns, types, rows = db.list_sources(con)
        finally:
            con.close()
    printer = Printer(env, fmt, header=not args.no_header)
    printer.formatter.write(ResultSet(columns, types, rows), env.stdout, printer.ctx)
    return ExitStatus.SUCCESS


def cmd_remove(args: argparse.Namespace, env: Env, path: str) -> ExitStatus:
    from netsql.intel import db

    con = db.open_db(path, create=False)
    try:
        known = db.sources(con)
        for source in args.sources:
            if source not in known:
                close = difflib.get_close_matches(source, known, n=3, cutoff=0.6)
                hint = f" (did you mean {', '.join(close)}?)" if close else (
                    f" (the lists: {', '.join(known)})" if known else " (no lists imported)")
                env.error(f"no such source: {source}{hint}")
                return ExitStatus.ERROR
        for source in dict.fromkeys(args.sources):
            n = db.remove(con, source)
            env.notice(f"removed source '{source}' ({n:,} indicators)")
    finally:
        con.close()
    return ExitStatus.SUCCESS


def cmd_path(args: argparse.Namespace, env: Env, path: str) -> ExitStatus:
    print(path, file=env.stdout)
    return ExitStatus.SUCCESS


COMMANDS: dict[str, Callable[[argparse.Namespace, Env, str], ExitStatus]] = {
    "import": cmd_import, "list": cmd_list, "remove": cmd_remove, "path": cmd_path}
