"""The working directory and variables a resident netsql runs a client's command in.

A process has one of each, so ``netsql serve`` runs commands of the same directory and
variables together, and makes one of another wait until they are done (docs/serve.md).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from netsql.serve.client import FORWARDED_ENV


class Contexts:
    """The directory and variables commands run in. The process has one of each, so
    commands of the same context run together; one of another waits until they are
    done, at most ``wait`` seconds (then the client runs it itself)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.key: tuple[str, tuple[tuple[str, str], ...]] | None = None
        self.running = 0
        self.saved: tuple[str, dict[str, str | None]] | None = None

    @contextlib.contextmanager
    def enter(self, request: dict[str, Any], wait: float) -> Iterator[bool]:
        given = request.get("env") or {}
        key = (str(request.get("cwd") or "/"),
               tuple((k, str(given[k])) for k in FORWARDED_ENV if k in given))
        with self.cond:
            ready = self.cond.wait_for(lambda: self.running == 0 or self.key == key, wait)
            if ready:
                if self.running == 0:
                    self._switch(key)
                self.running += 1
        if not ready:
            yield False
            return
        try:
            yield True
        finally:
            with self.cond:
                self.running -= 1
                if self.running == 0:
                    self._restore()
                self.cond.notify_all()

    def _switch(self, key: tuple[str, tuple[tuple[str, str], ...]]) -> None:
        here = os.getcwd()
        os.chdir(key[0])  # OSError (removed since): nothing changed, the command fails
        self.saved = (here, {k: os.environ.get(k) for k in FORWARDED_ENV})
        self.key = key
        given = dict(key[1])
        for k in FORWARDED_ENV:
            if k in given:
                os.environ[k] = given[k]
            else:
                os.environ.pop(k, None)

    def _restore(self) -> None:
        if self.saved is None:
            return
        here, env = self.saved
        self.saved, self.key = None, None
        with contextlib.suppress(OSError):
            os.chdir(here)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
