"""``netsql help [TOPIC]``: the main help, a subcommand's, a saved query's parameters,
a table's columns, or the output formats. Only what the topic needs is imported."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netsql.context import Env

TOPICS = ("serve", "intel", "formats", "tables", "queries")


def main(argv: Sequence[str], env: Env) -> int:
    """0 with the help on stdout; 2 (a usage error) for an unknown topic."""
    from netsql.context import ExitStatus
    from netsql.flags import build_parser

    if not argv:
        build_parser().print_help(env.stdout)
        return ExitStatus.SUCCESS
    if len(argv) > 1:
        env.error("usage: netsql help [TOPIC] (see netsql help)")
        return ExitStatus.USAGE
    topic = argv[0]
    if topic == "serve":
        from netsql.serve.server import build_parser as serve_parser

        serve_parser().print_help(env.stdout)
    elif topic == "intel":
        from netsql.intel.cli import build_parser as intel_parser

        intel_parser().print_help(env.stdout)
    elif topic == "formats":
        from netsql.formats import FORMATS

        width = max(len(f.name) for f in FORMATS) + 2
        env.stdout.write("Output formats (--format NAME; .mode NAME in the shell):\n\n" + "".join(
            f"  {f.name.ljust(width)}{f.description}\n" for f in FORMATS)
            + "\nTypes per format: docs/cli.md.\n")
    elif topic == "tables":
        from netsql.output import list_tables

        return list_tables(env, "table")
    elif topic == "queries":
        from netsql import run
        from netsql.flags import parse

        args = parse(["--list-queries"], env)
        return args if isinstance(args, ExitStatus) else run.run(args, ["--list-queries"], env)
    else:
        return _named(topic, env)
    return ExitStatus.SUCCESS


def _named(topic: str, env: Env) -> int:
    """A table's columns, or a saved query's parameters."""
    from netsql.context import ExitStatus
    from netsql.escape import escape_control
    from netsql.registry import default_tables, osquery_tables

    tables = {t.key: t for t in default_tables()}
    if topic.lower().startswith("osquery."):  # osquery's tables by their qualified name
        tables.update({t.key: t for t in osquery_tables()})
    table = tables.get(topic.lower())
    if table is not None:
        width = max(len(c.name) for c in table.columns) + 2
        types = max(len(c.type) for c in table.columns) + 2
        env.stdout.write(f"{table.key}: {table.description}\n\n" + "".join(
            f"  {c.name.ljust(width)}{c.type.ljust(types)}{c.description}\n"
            for c in table.columns))
        return ExitStatus.SUCCESS
    from netsql.queries import QueryUsageError, load_queries, query_help

    try:
        names = [q.name for q in load_queries([], warn=env.warn)]
        if topic in names:
            env.stdout.write(query_help(topic, [], warn=env.warn))
            return ExitStatus.SUCCESS
    except QueryUsageError as exc:
        env.error(str(exc))
        return ExitStatus.USAGE
    import difflib

    near = difflib.get_close_matches(topic, [*TOPICS, *tables, *names], n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    env.error(f"no help topic {escape_control(topic)!r}{hint}; topics: "
              f"{', '.join(TOPICS)}, a table name or a saved query name")
    return ExitStatus.USAGE
