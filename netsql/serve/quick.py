"""The one-liner's fast way to a resident netsql (docs/serve.md): before argparse, the
flag declarations, the runner or DuckDB are imported, a command line made only of the
common one-liner flags is handed to ``netsql serve`` as it is.

Measured (benchmarks/bench_core.py): the full path (cli, run, flags, context, collect)
costs a one-liner 40-60 ms of imports before it connects, more than the server takes
for ``SELECT 1``. This path imports os, socket, json and netsql.serve.client only.
Anything it does not know (another flag, a value that looks like one, no statement,
NETSQL_BACKEND set, no server listening, the server declining) goes the full way, which
decides as before; the server parses the arguments either way, so output, errors and
exit status are the same (the exit status is the server's, passed on as it is).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

#: Flags that take no value, and flags that take one, this path hands on as given.
#: (Every other flag needs the full path: --local, --watch, --capture, -i, -f, ...)
PLAIN = frozenset({"--csv", "--json", "--no-header", "--osquery"})
VALUED = frozenset({"-e", "--execute", "-q", "--query", "-p", "--param", "--format",
                    "--maxrows"})
SOURCES = frozenset({"-e", "--execute", "-q", "--query"})


def simple(argv: Sequence[str]) -> bool:
    """Whether ``argv`` is a one-liner this path may hand on: only the flags above,
    statements given (-e, or -q with a saved query's name, not a path), no value that
    starts with '-'."""
    words = list(argv)
    sources = 0
    i = 0
    while i < len(words):
        word = words[i]
        if word in PLAIN:
            i += 1
            continue
        if word not in VALUED or i + 1 >= len(words):
            return False
        value = words[i + 1]
        if value.startswith("-") or (word in ("-q", "--query") and "/" in value):
            return False
        sources += word in SOURCES
        i += 2
    return sources > 0


def forward(argv: Sequence[str]) -> int | None:
    """Run ``argv`` in a resident netsql if it is simple and one listens: the exit
    status, or None (go the full way; a declined command says why there)."""
    if not simple(argv) or "NETSQL_BACKEND" in os.environ:
        return None
    from netsql.serve import client

    path = client.socket_path()
    if not path or client.untrusted(path) is not None:
        return None
    try:
        cwd = os.getcwd()
    except OSError:
        return None
    import signal

    # `netsql -e ... | head` ends quietly, as the full path does (cli.main).
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    isatty = sys.stdout.isatty()
    width = 1_000_000
    if isatty:  # as netsql.context.Env decides it
        import shutil

        width = shutil.get_terminal_size((100, 24)).columns
    sock = client.connect(path)
    if sock is None:
        return None
    from netsql import __version__

    request = {"argv": list(argv), "cwd": cwd, "stdin": None, "stdout_isatty": isatty,
               "width": width, "version": __version__,
               "raw": client.raw_errors(sys.stdout),
               "env": {k: os.environ[k] for k in client.FORWARDED_ENV if k in os.environ}}
    try:
        status = client.forward(sock, request, sys.stdout, sys.stderr)
    except (OSError, ValueError) as exc:
        from netsql.context import notice

        notice(sys.stderr, f"the resident netsql failed: {exc}", "error")
        return 1
    if status is None:
        client.TRIED.append(path)  # declined: the full way runs it here
        return None
    return client.passed_on(status)


def main(argv: Sequence[str]) -> None:
    """Hand ``argv`` on and end the process with its status (returns when it cannot)."""
    status = forward(argv)
    if status is None:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)  # nothing to tear down: exit at once (see netsql.run.exit_now)
