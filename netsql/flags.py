"""The command line's flags: one parser declaration, read by cli.py (to dispatch),
serve's server (for a forwarded command) and docgen (docs/cli-reference.md)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from netsql import __version__, netns
from netsql.context import (
    DNS_BUFFER,
    FORMAT_NAMES,
    Env,
    ExitStatus,
    Parser,
    UsageError,
    port,
    positive,
    seconds,
)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(text)


def netns_spec(text: str) -> int:
    """--netns: a network namespace's inode, `ip netns` name or a pid (netns.resolve,
    the one rule), as the namespace's inode."""
    try:
        return netns.resolve(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _source(kind: str) -> type:
    class Tagged(str):
        tag = kind

    return Tagged


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="netsql", add_help=False,
        usage="netsql [options] [-e SQL | -f FILE | -q NAME]...\n"
        "       netsql serve [options]          the resident engine (netsql help serve)\n"
        "       netsql intel COMMAND ...        threat-intel lists (netsql help intel)\n"
        "       netsql help [TOPIC]             TOPIC: serve, intel, formats, tables, "
        "queries,\n"
        "                                       a table or a saved query",
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
    p.add_argument("--maxrows", type=_count, default=40, metavar="N",
                   help="on a terminal, the table format shows the first and last N/2 rows "
                   "of a longer result and the row count (default 40; 0: every row)")
    p.add_argument("--list-tables", action="store_true",
                   help="list the virtual tables (with --format json: the whole schema)")
    dns = p.add_argument_group("DNS capture (the dns_queries table)")
    dns.add_argument("--capture", type=seconds, metavar="SECONDS",
                     help="capture DNS live for SECONDS, then run the statements "
                     "(needs root or CAP_NET_RAW)")
    dns.add_argument("-i", "--interface", action="append", metavar="IFACE",
                     help="capture on IFACE only (repeatable; default: every interface, "
                     "loopback included), in each captured namespace that has it")
    dns.add_argument("--netns", action="append", type=netns_spec, metavar="NS",
                     help="capture in network namespace NS only: its inode, `ip netns` "
                     "name, or a pid in it (repeatable; default: every namespace)")
    dns.add_argument("--pcap", action="append", metavar="FILE",
                     help="read dns_queries from a pcap or pcapng file instead of the "
                     "live interfaces (repeatable)")
    dns.add_argument("--dns-port", action="append", type=port, metavar="PORT",
                     help="DNS server port to decode (repeatable; default 53; 5353 is "
                     "mDNS, 5355 LLMNR)")
    dns.add_argument("--dns-buffer", type=positive, default=DNS_BUFFER, metavar="N",
                     help="keep at most N live DNS transactions, evicting the oldest "
                     "(default 100000)")
    dns.add_argument("--hold", action="store_true",
                     help="hold each DNS query this host sends until its process is known "
                     "(adds an iptables rule and a little latency; root; docs/dns.md)")
    p.add_argument("--intel-db", metavar="PATH", help="the threat-intel database read by the "
                   "intel table and the flagged view (default: $NETSQL_INTEL_DB, else "
                   "$XDG_DATA_HOME/netsql/intel.duckdb; lists are kept with netsql intel)")
    p.add_argument("--history", metavar="DIR", help="read the history.<table> views from "
                   "DIR, a tree `netsql serve --record DIR` wrote (or many hosts' trees "
                   "synced into one; docs/history.md)")
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
    live.add_argument("--watch", nargs="?", const=2.0, type=seconds, metavar="SECONDS",
                      help="re-run the statements every SECONDS (default 2): a full-screen "
                      "view on a terminal (q quits), else a stream of results until "
                      "SIGINT/SIGTERM")
    live.add_argument("--changes", action="store_true",
                      help="with --watch: write only the rows added and removed since the "
                      "last refresh, each with an \"action\" field (off a terminal)")
    p.add_argument("--safe", action="store_true",
                   help="SQL reads netsql's tables only: no file or network access, no "
                   "settings changed (for sudo rules; config key safe; docs/security.md)")
    osq = p.add_argument_group("osquery compatibility (docs/osquery.md)")
    osq.add_argument("--osquery", action="store_true",
                     help="osquery's table names resolve to osquery-shaped tables first "
                     "(always reachable as osquery.TABLE), in osquery's SQLite dialect")
    osq.add_argument("--pack", metavar="FILE", help="run every query of the osquery pack "
                     "FILE (implies --osquery); with --format json or jsonl, as osqueryd's "
                     "results log")
    p.add_argument("--local", action="store_true",
                   help="run here even when a resident netsql (netsql serve) listens")
    p.add_argument("--version", action="version", version=f"netsql {__version__}")
    return p


def parse(argv: Sequence[str], env: Env) -> argparse.Namespace | ExitStatus:
    """The flags of ``argv``, or the exit status when there is nothing to run (a usage
    error, already reported; --version, already printed)."""
    try:
        return build_parser().parse_args(argv)
    except UsageError as exc:
        env.error(f"{exc} (see netsql --help)")
        return ExitStatus.USAGE
    except SystemExit as exc:  # --version
        return ExitStatus.SUCCESS if not exc.code else ExitStatus.USAGE
