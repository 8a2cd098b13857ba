"""DNS sources set up for the engine: capture files, a live capture (for a --capture
window, a watch, the shell or netsql serve).

Split from cli.py so the one-liner path stays thin; nothing here is imported by
`netsql -e` unless capture flags or the shell are used.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from netsql import signals
from netsql.collect import State
from netsql.context import Env, ExitStatus, isatty

if TYPE_CHECKING:
    from netsql.capture.manager import DnsCapture


def unreadable_capture_file(paths: list[str]) -> str | None:
    """Why the first of the ``--pcap`` files cannot be read (exit status 2), or None.
    Opened here so the message says why (no such file, permission denied, a
    directory); what is in a file is checked when it is read. A pipe is refused before
    it is opened (opening one waits for a writer): its statements read the file again
    each time, and a pipe gives its bytes once."""
    import os
    import stat

    for path in paths:
        try:
            mode = os.stat(path).st_mode
            if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                return (f"cannot read capture file {path}: a pipe, which can be read only "
                        "once; save the capture to a file first (tcpdump -w FILE)")
            with open(path, "rb"):
                pass
        except OSError as exc:
            return f"cannot read capture file {path}: {exc.strerror or exc}"
    return None


def capture_state(args: argparse.Namespace, env: Env, watched: list[str] | None = None,
                  resident: State | None = None,
                  ) -> tuple[State, ExitStatus | None]:
    """DNS sources for the engine: capture files, a live capture (run for --capture).

    ``watched``: the SQL of a --watch. Its capture keeps running for the whole watch
    (the caller stops it), and starts without --capture when the SQL reads what a
    capture fills in (DNS names, captured UDP/ICMP flows). ``resident``: the state of
    ``netsql serve``, whose capture runs all along (the client waited out --capture).
    """
    state = resident if resident is not None else State()
    live = bool(args.capture) or (watched is not None and not args.pcap and any(
        w in text.lower() for text in watched for w in _CAPTURE_WORDS))
    if resident is not None:
        live = False
    if not args.pcap and not live:
        return state, None  # keeps `netsql -e` from importing the capture code
    from netsql.capture.manager import PcapSource

    ports = args.dns_port or [53]
    problem = unreadable_capture_file(args.pcap or [])
    if problem is not None:
        env.error(problem)
        return state, ExitStatus.USAGE
    if args.pcap:
        state.pcap = PcapSource(args.pcap, ports)
    if resident is not None:
        return state, None
    capture = new_capture(args)
    state.capture = capture
    if args.capture and args.pcap:
        env.error("--capture and --pcap do not go together: dns_queries reads one source")
        return state, ExitStatus.USAGE
    if live:
        try:
            if start_capture(capture) is not None:
                # Statements that need dns_queries fail with capture.error; the rest run.
                return state, None
            if args.capture:
                try:
                    countdown(env, args.capture)
                except KeyboardInterrupt:  # as tcpdump: the window ends, the answers come
                    signals.handled()
                    env.notice("capture ended early (Ctrl-C); running the statements "
                               "(Ctrl-C again aborts)")
            if watched is None:
                capture.stop()
                capture.settle()
        except BaseException:  # a signal: undo whatever part of the capture started
            close_within(capture, CLOSE_SECONDS)
            raise
    return state, None


#: How long a capture interrupted by a signal may take to close before netsql ends.
CLOSE_SECONDS = 10.0


def close_within(capture: DnsCapture, seconds: float) -> None:
    """``capture.close()``, in a thread given ``seconds`` at most. A signal that
    interrupted the capture's stop can land between a lock's acquire and the block that
    releases it (a Python race), leaving a lock the close would wait on for ever; the
    process is ending: it must not hang there. (Seen once in CI: a second Ctrl-C during
    the stop of an ended capture window, and netsql still running 30 s later.)"""
    import threading

    closing = threading.Thread(target=capture.close, name="netsql-close", daemon=True)
    closing.start()
    closing.join(seconds)


def new_capture(args: argparse.Namespace) -> DnsCapture:
    """The live DNS capture the flags ask for (-i, --netns, --dns-port, --dns-buffer,
    --hold), not started: the one place netsql sets one up (commands, the shell, netsql
    serve)."""
    from netsql.capture.manager import DnsCapture

    return DnsCapture(args.interface, args.dns_port or [53], capacity=args.dns_buffer,
                      hold=args.hold, netns=getattr(args, "netns", None))


def start_capture(capture: DnsCapture) -> str | None:
    """Start ``capture``; None, or why it could not start (also kept in
    capture.error, which .capture and dns_queries report)."""
    from netsql.capture.live import CaptureError

    try:
        capture.start()
    except CaptureError as exc:
        return str(exc)
    return None


#: Words of --watch SQL that reads what live capture fills in (the capture then runs for
#: the whole watch, as in the shell).
_CAPTURE_WORDS = ("dns_queries", "remote_host", "capture_stats", "flows")


def countdown(env: Env, seconds: float) -> None:
    import time

    end = time.monotonic() + seconds
    tty = isatty(env.stderr)
    print(f"netsql: capturing DNS and flows for {seconds:g} s", file=env.stderr, flush=True)
    try:
        while (left := end - time.monotonic()) > 0:
            if tty:
                env.stderr.write(f"\rnetsql: capturing DNS and flows, {left:4.0f} s left ")
                env.stderr.flush()
            time.sleep(min(left, 0.25))
    finally:
        if tty:
            env.stderr.write("\r" + " " * 40 + "\r")
            env.stderr.flush()
