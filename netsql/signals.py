"""SIGINT, SIGTERM and SIGHUP from the first instruction on (docs/cli.md, exit status).

Two phases. Until :func:`arm`, nothing needs cleaning up and the interpreter may be deep
inside an import (DuckDB's native module aborts the process when an exception is raised
while it initialises) or argument parsing (which turns SystemExit into a usage error):
a signal ends netsql at once, silently, with 128 + its number (130 for Ctrl-C). After
:func:`arm`, SIGTERM and SIGHUP raise SystemExit(128 + N) and SIGINT KeyboardInterrupt,
so ``finally`` blocks run (a capture removes its firewall rules; an import rolls back).

Only the netsql process itself installs these (``python -m netsql``, the ``netsql``
command); a test calling ``netsql.cli.main`` in-process keeps its own handlers.
A leaf module: standard library only, loaded before anything else.
"""

from __future__ import annotations

import os
import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_installed = False
#: The signals that arrived after arm(): DuckDB can swallow the exception a handler
#: raises while it runs a statement, so the exit status is decided from this too.
_received: list[int] = []


def _exit_now(signum: int, frame: object) -> None:
    os._exit(128 + signum)


def _unwind(signum: int, frame: object) -> None:
    _received.append(signum)
    raise SystemExit(128 + signum)


def _interrupt(signum: int, frame: object) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def reraise() -> None:
    """Raise again what the last signal's handler raised, after DuckDB turned it into
    its own "Query interrupted" error: SystemExit(128 + N) for SIGTERM and SIGHUP,
    KeyboardInterrupt for SIGINT (or when no signal is known: DuckDB's interrupt)."""
    if _received and _received[-1] != signal.SIGINT:
        raise SystemExit(128 + _received[-1])
    raise KeyboardInterrupt


def handled() -> None:
    """The Ctrl-C that just arrived was taken as an instruction (it ended a capture
    window early): not a reason for the exit status."""
    _received.clear()


def status(ran: int) -> int:
    """The exit status of a command that finished with ``ran``: 128 + N when a signal
    arrived after arm() and the command still reported success (the signal's
    exception was lost inside DuckDB)."""
    return 128 + _received[0] if _received and ran == 0 else ran


def install() -> None:
    """The first phase: a signal ends the process at once with 128 + N."""
    global _installed
    for sig in SIGNALS:
        signal.signal(sig, _exit_now)
    _installed = True


def arm() -> None:
    """The second phase, once the native modules are loaded: unwind on a signal.
    Does nothing unless :func:`install` ran, or outside the main thread."""
    if not _installed:
        return
    try:
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _unwind)
        signal.signal(signal.SIGHUP, _unwind)
    except ValueError:  # not the main thread (a serve worker): the process's stay
        pass
