"""One collection pass: what a statement needs, and the work its tables share.

The engine makes one ``Collection`` per statement; every table the statement
references is collected through it, so joined tables see one moment and share
expensive work (the ``/proc/*/fd`` scan, the list of network namespaces).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Need:
    """What one statement needs from one table.

    ``columns`` is the set of columns the statement reads (None: all of them);
    ``pids`` restricts rows to these process ids when the statement filters on
    ``pid`` (None: every process). Both are hints for the collector: DuckDB still
    applies the statement's own filters to whatever is loaded.
    """

    columns: frozenset[str] | None = None
    pids: frozenset[int] | None = None

    def wants(self, *names: str) -> bool:
        return self.columns is None or any(n in self.columns for n in names)

    def keep_pids(self, cols: dict[str, list[Any]], rows: int | None = None
                  ) -> dict[str, list[Any]]:
        """``cols`` with only the rows of ``pids`` (all of them when pids is None). A
        table without a ``pid`` column (``rows`` of them) keeps none."""
        if self.pids is None:
            return cols
        pid = cols.get("pid") or [None] * (rows or 0)
        keep = [i for i, p in enumerate(pid) if p in self.pids]
        return {k: [v[i] for i in keep] for k, v in cols.items()}

    @staticmethod
    def merge(needs: Iterable[Need]) -> Need:
        cols: set[str] | None = set()
        pids: set[int] | None = set()
        for n in needs:
            if cols is not None:
                cols = None if n.columns is None else cols | n.columns
            if pids is not None:
                pids = None if n.pids is None else pids | n.pids
        return Need(
            None if cols is None else frozenset(cols),
            None if pids is None else frozenset(pids),
        )


_PID_EQ = re.compile(r"^\(?pid = (\d+)\)?$")
_PID_RANGE = re.compile(r"^\(\(pid >= (\d+)\) AND \(pid <= (\d+)\)\)$")
_MAX_PID_RANGE = 4096


def pids_from_filters(filters: list[str]) -> frozenset[int] | None:
    """Pids named by a scan's pushed-down filters (DuckDB's EXPLAIN text), if any."""
    for f in filters:
        m = _PID_EQ.match(f.strip())
        if m:
            return frozenset({int(m.group(1))})
        m = _PID_RANGE.match(f.strip())
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if 0 <= hi - lo <= _MAX_PID_RANGE:
                return frozenset(range(lo, hi + 1))
    return None


#: Said once (per command) when a statement reads a DNS-derived column with no DNS source.
NO_DNS_SOURCE = ("remote_host is NULL for every row: no DNS source is active (capture DNS "
                 "with --capture SECONDS, read it with --pcap FILE, or run netsql serve)")


def milliseconds(seconds: list[Any]) -> list[Any]:
    """Durations in seconds as milliseconds, to the microsecond (``rtt`` columns)."""
    return [None if v is None else round(v * 1000.0, 3) for v in seconds]


@dataclass
class State:
    """What outlives one statement: the engine's sources and caches (one per shell,
    watch, command or netsql serve). Collectors read it through ``Collection.state``."""

    #: The live DNS capture (netsql.capture.manager.DnsCapture) or None.
    capture: Any = None
    #: Capture files read for dns_queries (netsql.capture.manager.PcapSource) or None.
    pcap: Any = None
    #: --intel-db: the threat-intel database (None: netsql.paths.intel_db's default).
    intel_db: str | None = None
    #: --queries DIRs of the shell (.run, .queries).
    query_dirs: list[str] = field(default_factory=list)
    #: Set to stop a collection between tables (Ctrl-C in the shell, a client gone).
    cancel: threading.Event | None = None
    #: Interrupts the running statement (netsql serve, when its client goes away).
    interrupt: Callable[[], None] | None = None
    #: --safe: SQL reaches netsql's tables and nothing else (netsql.dbconfig.lock).
    safe: bool = False
    #: A fresh Engine netsql serve made ahead for the next command, or None.
    spare_engine: Any = None
    #: Collectors' caches that outlive a pass, by name (kept by netsql serve too).
    caches: dict[str, Any] = field(default_factory=dict)
    #: --history DIR: the recorded tree the history.<table> views read, or None.
    history: str | None = None
    #: netsql serve --record's recorder (netsql.history.recorder.Recorder), or None.
    recorder: Any = None
    #: netsql serve, for a client in another namespace: collects each table for that
    #: client or refuses it (netsql.serve.scope.Scope), or None.
    scope: Any = None

    def dns_sources(self) -> list[Any]:
        """The DNS sources names come from: capture files, a live capture that ran."""
        found = [] if self.pcap is None else [self.pcap]
        if self.capture is not None and getattr(self.capture, "ever_started", True):
            found.append(self.capture)
        return found

    def for_command(self, **given: Any) -> State:
        """A state for one command of netsql serve: this one's capture, caches and
        recorder (shared), nothing else of it."""
        given.setdefault("history", self.history)
        return State(capture=self.capture, caches=self.caches, recorder=self.recorder,
                     **given)


@dataclass
class Collection:
    """Shared state of one collection pass."""

    started: float = field(default_factory=time.time)
    warnings: list[str] = field(default_factory=list)
    _cache: dict[str, Any] = field(default_factory=dict)
    #: Per-engine state that outlives one pass (capture buffers, caches keyed by pid
    #: and start time). Set by the engine.
    state: State = field(default_factory=State)
    #: Every table this pass collects (collectors may share work across them).
    tables: frozenset[str] = frozenset()

    def once(self, key: str, fn: Callable[[], T]) -> T:
        """``fn()`` computed at most once in this pass."""
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]  # type: ignore[no-any-return,unused-ignore]

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
