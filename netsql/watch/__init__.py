"""The live view: ``--watch SECONDS`` and the shell's ``.watch`` (docs/watch.md).

* :mod:`~netsql.watch.diff`: column roles (key, counter, gauge), row identity, what was
  added and removed between two refreshes, per-second rates. Pure.
* :mod:`~netsql.watch.runner`: runs the statements once per refresh in one Engine.
* :mod:`~netsql.watch.stream`: off a terminal, every refresh (or only its changes) to
  standard output; ends cleanly on SIGINT/SIGTERM.
* :mod:`~netsql.watch.view`: what the full-screen view shows, as plain data.
* :mod:`~netsql.watch.screen`: the full-screen view (prompt_toolkit, imported only when
  it runs, so ``netsql -e`` and the streaming watch never load it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from netsql.watch.runner import NothingToWatch, Source, Watch, one_thread

if TYPE_CHECKING:
    from netsql.context import Env
    from netsql.engine import Engine

DEFAULT_INTERVAL = 2.0


def use_screen(env: Env, fmt: str | None, changes: bool) -> bool:
    """The full-screen view when both ends are a terminal (keys come from standard input)
    and the output is the default table; a stream otherwise."""
    return bool(env.stdout_isatty and env.stdin_isatty) and fmt in (None, "table") \
        and not changes


def describe(sources: Sequence[Source]) -> str:
    """A short name for the title bar: the saved query or file, else the SQL."""
    from netsql.formats import escape_control

    if len(sources) == 1 and sources[0][0] not in ("sql", "stdin"):
        return escape_control(sources[0][0])
    text = escape_control(" ".join(" ".join(s[1] for s in sources).split()))
    return text if len(text) <= 200 else text[:199] + "…"


def run_watch(env: Env, engine: Engine, sources: Sequence[Source], *, interval: float,
              fmt: str | None, changes: bool = False, header: bool = True) -> int:
    """Watch ``sources`` until the user quits (the screen) or a signal ends the stream;
    the exit status."""
    from netsql.context import ExitStatus

    watch = Watch(engine, sources)
    with one_thread(engine):
        if not use_screen(env, fmt, changes):
            from netsql.watch.stream import run_stream

            return run_stream(watch, env, fmt=fmt or "table", interval=interval,
                              changes=changes, header=header)
        first = watch.first(env)
        if isinstance(first, int):
            return first
        for w in first.warnings:
            env.warn(w)
        from netsql.watch.screen import run_screen

        run_screen(watch, first, interval=interval, title=describe(sources))
        return ExitStatus.SUCCESS


__all__ = ["DEFAULT_INTERVAL", "NothingToWatch", "Source", "Watch", "run_watch", "use_screen"]
