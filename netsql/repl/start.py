"""The interactive shell's start: DNS sources and a background capture, then the
prompt (repl/app.py)."""

from __future__ import annotations

import argparse

from netsql.collect import State
from netsql.context import Env, ExitStatus


def shell(env: Env, args: argparse.Namespace) -> ExitStatus:
    """The interactive shell, capturing DNS in the background from the start."""
    import threading

    from netsql.capture.manager import PcapSource
    from netsql.launch import new_capture, start_capture, unreadable_capture_file
    from netsql.repl.app import run_shell  # prompt_toolkit only for the shell

    problem = unreadable_capture_file(args.pcap or [])
    if problem is not None:
        env.error(problem)
        return ExitStatus.USAGE
    state = State(intel_db=args.intel_db or None, query_dirs=list(args.queries or []),
                  history=args.history or None)
    if args.pcap:
        state.pcap = PcapSource(args.pcap, args.dns_port or [53])
    capture = state.capture = new_capture(args)
    if not args.pcap:  # a failure is kept in capture.error: .capture and dns_queries say why
        threading.Thread(target=start_capture, args=(capture,), name="netsql-capture-start",
                         daemon=True).start()

    def saved() -> list[tuple[str, str]]:
        from netsql.queries import QueryUsageError, load_queries

        try:
            return [(q.name, q.description) for q in load_queries(args.queries or [])]
        except QueryUsageError:
            return []

    try:
        return run_shell(env, state, sources={"query": saved}, osquery=args.osquery)
    finally:
        capture.close()
