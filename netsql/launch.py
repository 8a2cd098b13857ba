"""How a command runs beyond one pass of statements: DNS sources set up for the
engine (capture files, a live capture window) and the interactive shell's start.

Split from cli.py so the one-liner path stays thin; nothing here is imported by
`netsql -e` unless capture flags or the shell are used.
"""

from __future__ import annotations

import argparse
import os

from netsql.cli import Env, ExitStatus, _isatty


def capture_state(args: argparse.Namespace, env: Env, watched: list[str] | None = None,
                  resident: dict[str, object] | None = None,
                  ) -> tuple[dict[str, object], ExitStatus | None]:
    """DNS sources for the engine: capture files, a live capture (run for --capture).

    ``watched``: the SQL of a --watch. Its capture keeps running for the whole watch
    (the caller stops it), and starts without --capture when the SQL reads what a
    capture fills in (DNS names, captured UDP/ICMP flows). ``resident``: the state of
    ``netsql serve``, whose capture runs all along (the client waited out --capture).
    """
    state: dict[str, object] = resident if resident is not None else {}
    live = bool(args.capture) or (watched is not None and not args.pcap and any(
        w in text.lower() for text in watched for w in _CAPTURE_WORDS))
    if resident is not None:
        live = False
    if not args.pcap and not live:
        return state, None  # keeps `netsql -e` from importing the capture code
    from netsql.capture.manager import DnsCapture, PcapSource

    ports = args.dns_port or [53]
    for path in args.pcap or []:
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            env.error(f"cannot read capture file {path}")
            return state, ExitStatus.USAGE
    if args.pcap:
        state["pcap"] = PcapSource(args.pcap, ports)
    if resident is not None:
        return state, None
    capture = DnsCapture(args.interface, ports, capacity=args.dns_buffer)
    state["capture"] = capture
    if args.capture and args.pcap:
        env.error("--capture and --pcap do not go together: dns_queries reads one source")
        return state, ExitStatus.USAGE
    if live:
        from netsql.capture.live import CaptureError

        try:
            capture.start()
            if args.capture:
                countdown(env, args.capture)
        except CaptureError:
            # Statements that need dns_queries fail with capture.error; the rest run.
            return state, None
        except BaseException:  # a signal: undo whatever part of the capture started
            capture.close()
            raise
        if watched is None:
            capture.stop()
            capture.settle()
    return state, None


#: Words of --watch SQL that reads what live capture fills in (the capture then runs for
#: the whole watch, as in the shell).
_CAPTURE_WORDS = ("dns_queries", "remote_host", "capture_stats", "flows")


def countdown(env: Env, seconds: float) -> None:
    import time

    end = time.monotonic() + seconds
    tty = _isatty(env.stderr)
    print(f"netsql: capturing DNS and flows for {seconds:g} s", file=env.stderr, flush=True)
    while (left := end - time.monotonic()) > 0:
        if tty:
            env.stderr.write(f"\rnetsql: capturing DNS and flows, {left:4.0f} s left ")
            env.stderr.flush()
        time.sleep(min(left, 0.25))
    if tty:
        env.stderr.write("\r" + " " * 40 + "\r")
        env.stderr.flush()


def shell(env: Env, args: argparse.Namespace) -> ExitStatus:
    """The interactive shell, capturing DNS in the background from the start."""
    import threading

    from netsql.capture.manager import DnsCapture, PcapSource
    from netsql.repl.app import run_shell  # prompt_toolkit only for the shell

    ports = args.dns_port or [53]
    state: dict[str, object] = {}
    if args.intel_db:
        state["intel_db"] = args.intel_db
    if args.pcap:
        state["pcap"] = PcapSource(args.pcap, ports)
    capture = DnsCapture(args.interface, ports, capacity=args.dns_buffer)
    state["capture"] = capture

    def start() -> None:
        from netsql.capture.live import CaptureError

        try:
            capture.start()
        except CaptureError:
            pass  # kept in capture.error: .capture and dns_queries say why

    if not args.pcap:
        threading.Thread(target=start, name="netsql-capture-start", daemon=True).start()
    state["query_dirs"] = list(args.queries or [])

    def saved() -> list[tuple[str, str]]:
        from netsql.queries import QueryUsageError, load_queries

        try:
            return [(q.name, q.description) for q in load_queries(args.queries or [])]
        except QueryUsageError:
            return []

    try:
        return run_shell(env, state, sources={"query": saved})
    finally:
        capture.close()
