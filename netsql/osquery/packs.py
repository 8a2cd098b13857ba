"""osquery packs (``netsql --osquery --pack FILE``) and osqueryd's results-log lines.

A pack is osquery's JSON: ``{"platform": ..., "discovery": [SQL...], "queries": {NAME:
{"query": SQL, "interval": N, "platform": ..., "snapshot": bool, ...}}}``. osquery's
config reader also takes ``//`` and ``#`` comment lines and a backslash at the end of a
line inside a string (osquery's own packs use both); so does this one.

Output, per query, under osqueryd's name for it (``pack_<pack>_<query>``):

* table, line, csv, markdown: a ``-- NAME`` line, then the result;
* json and jsonl: osqueryd's results-log lines, one JSON object per line
  (``name, hostIdentifier, calendarTime, unixTime, epoch, counter, numerics, columns,
  action``; columns' values as strings, NULL as ""). A single run logs every row as
  ``"added"`` (osqueryd's first differential result); a ``"snapshot": true`` query logs
  one ``"snapshot"`` line holding all its rows;
* ``--watch SECONDS``: every query every SECONDS; with ``--changes`` the ``"added"``
  and ``"removed"`` lines since the previous run (as osqueryd's differential log), else
  a ``"snapshot"`` line per query per run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from netsql.errors import NetsqlError
from netsql.escape import escape_control
from netsql.formats.data import json_value, plain_text

if TYPE_CHECKING:
    import argparse

    from netsql.context import Env
    from netsql.engine import Engine
    from netsql.formats.base import ResultSet

#: Platforms a pack or query may name that include Linux.
LINUX = {"", "all", "any", "posix", "linux"}
MAX_PACK_BYTES = 4 << 20  # osquery's own config size limit


class PackError(NetsqlError):
    """The pack file cannot be read or is not a pack."""


@dataclass
class PackQuery:
    name: str  # the key in "queries"
    query: str
    interval: int | None = None
    platform: str = ""
    snapshot: bool = False
    description: str = ""

    def runs_here(self) -> bool:
        return on_linux(self.platform)


@dataclass
class Pack:
    name: str  # the file's name without extension, as osquery names packs by their key
    queries: list[PackQuery]
    platform: str = ""
    discovery: list[str] = field(default_factory=list)

    def log_name(self, query: PackQuery) -> str:
        """osqueryd's name for a pack's query: pack_<pack>_<query>."""
        return f"pack_{self.name}_{query.name}"


def on_linux(platform: str) -> bool:
    return any(p.strip().lower() in LINUX for p in (platform or "").split(","))


_COMMENT = re.compile(r"^\s*(//|#).*$", re.MULTILINE)


def parse_pack(text: str, name: str) -> Pack:
    """A pack from its JSON text (PackError says what is wrong, in one line)."""
    text = _COMMENT.sub("", text.replace("\\\r\n", "").replace("\\\n", ""))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PackError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
                        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("queries"), dict):
        raise PackError('not an osquery pack: no "queries" object')
    queries = []
    for qname, spec in data["queries"].items():
        if not isinstance(spec, dict) or not isinstance(spec.get("query"), str):
            raise PackError(f'query {qname!r} has no "query" text')
        interval = spec.get("interval")
        queries.append(PackQuery(
            str(qname), spec["query"],
            int(interval) if isinstance(interval, int | str) and str(interval).isdigit()
            else None, str(spec.get("platform") or ""), bool(spec.get("snapshot")),
            str(spec.get("description") or "")))
    discovery = data.get("discovery") or []
    if not isinstance(discovery, list) or not all(isinstance(d, str) for d in discovery):
        raise PackError('"discovery" must be a list of SQL texts')
    return Pack(name, queries, str(data.get("platform") or ""), discovery)


def shipped_packs() -> dict[str, str]:
    """The packs netsql ships: name -> path (netsql/osquery/packs/*.conf)."""
    here = os.path.join(os.path.dirname(__file__), "packs")
    try:
        return {f[:-5]: os.path.join(here, f) for f in sorted(os.listdir(here))
                if f.endswith(".conf")}
    except OSError:
        return {}


def load_pack(path: str) -> Pack:
    """The pack in file ``path``, or the shipped pack of that name."""
    shipped = shipped_packs()
    if not os.path.exists(path) and path in shipped:
        path = shipped[path]
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PACK_BYTES + 1)
    except OSError as exc:
        known = ", ".join(shipped) or "none"
        raise PackError(f"cannot read pack {path}: {exc.strerror or exc} (shipped packs: "
                        f"{known})") from None
    if len(raw) > MAX_PACK_BYTES:
        raise PackError(f"pack {path} is larger than {MAX_PACK_BYTES >> 20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PackError(f"pack {path} is not UTF-8 text") from None
    base = os.path.basename(path)
    name = base.rsplit(".", 1)[0] if "." in base else base
    try:
        return parse_pack(text, name)
    except PackError as exc:
        raise PackError(f"pack {path}: {exc}") from None


# -- results-log lines ---------------------------------------------------------------


def osquery_text(v: Any) -> str:
    """A value as osquery logs it: text; NULL as ""; booleans 1 and 0."""
    if isinstance(v, bool):
        return "1" if v else "0"
    return plain_text(v)


def row_columns(columns: list[str], row: tuple[Any, ...]) -> dict[str, str]:
    """A row as osquery's "columns" object: names in order, values as strings."""
    return dict(sorted(zip(columns, (osquery_text(v) for v in row), strict=True)))


class Log:
    """Writes osqueryd's results-log lines for one host."""

    def __init__(self, host: str | None = None) -> None:
        self.host = host or socket.gethostname()
        self.counters: dict[str, int] = {}

    def head(self, name: str, at: float) -> dict[str, Any]:
        when = dt.datetime.fromtimestamp(int(at), dt.UTC)
        return {"name": name, "hostIdentifier": self.host,
                "calendarTime": when.strftime("%a %b %e %H:%M:%S %Y UTC"),
                "unixTime": int(at), "epoch": 0, "counter": self.counters.get(name, 0),
                "numerics": False}

    def differential(self, name: str, at: float, added: list[dict[str, str]],
                     removed: list[dict[str, str]]) -> Iterator[str]:
        head = self.head(name, at)
        for action, rows in (("removed", removed), ("added", added)):
            for cols in rows:
                yield _line({**head, "columns": cols, "action": action})
        self.counters[name] = head["counter"] + 1

    def snapshot(self, name: str, at: float, rows: list[dict[str, str]]) -> str:
        head = self.head(name, at)
        self.counters[name] = head["counter"] + 1
        return _line({**head, "snapshot": rows, "action": "snapshot"})


def _line(v: Any) -> str:
    """Compact JSON, as osqueryd writes it (strings escaped by netsql's json_value)."""
    if isinstance(v, dict):
        return "{" + ",".join(f"{json_value(k)}:{_line(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_line(x) for x in v) + "]"
    return json_value(v)


# -- running -------------------------------------------------------------------------


class Runner:
    """Runs a pack's queries in one engine (osquery mode) and writes their results."""

    def __init__(self, env: Env, engine: Engine, pack: Pack, fmt: str, *,
                 header: bool = True, changes: bool = False) -> None:
        from netsql.output import Printer

        self.env, self.engine, self.pack = env, engine, pack
        self.fmt, self.changes = fmt, changes
        self.log = Log() if fmt in ("json", "jsonl") else None
        self.printer = Printer(env, fmt, header=header)
        self.last: dict[str, Counter[tuple[tuple[str, str], ...]]] = {}
        self.failed = False
        self._seen: set[str] = set()

    def queries(self) -> list[PackQuery]:
        """The queries to run: other platforms' are left out with a note."""
        if not on_linux(self.pack.platform):
            self.env.warn(f"pack {self.pack.name}: platform {self.pack.platform!r}: "
                          "nothing runs on Linux")
            return []
        keep = []
        for q in self.pack.queries:
            if q.runs_here():
                keep.append(q)
            else:
                self.env.warn(f"{self.pack.log_name(q)}: skipped (platform {q.platform})")
        return keep

    def discovered(self) -> bool:
        """osquery runs a pack only when each discovery query returns a row."""
        for sql in self.pack.discovery:
            data = self.result(sql, "discovery")
            if data is None or not data.rows:
                self.env.warn(f"pack {self.pack.name}: discovery query returned no rows, "
                              "so the pack does not run here")
                return False
        return True

    def result(self, sql: str, name: str) -> ResultSet | None:
        """The last result of ``sql``'s statements (None after an error, reported)."""
        data = None
        try:
            for res in self.engine.run(sql):
                for w in res.warnings:
                    if w not in self._seen:
                        self._seen.add(w)
                        self.env.warn(w)
                if res.data is not None:
                    data = res.data
        except NetsqlError as exc:
            self.env.error(f"{name}: {exc}")
            self.failed = True
            return None
        return data

    def run_once(self, queries: list[PackQuery], watching: bool) -> None:
        for q in queries:
            name = self.pack.log_name(q)
            at = time.time()
            data = self.result(q.query, name)
            if data is None:
                continue
            self.write(name, q, data, at, watching)
        self.env.stdout.flush()

    def write(self, name: str, q: PackQuery, data: ResultSet, at: float,
              watching: bool) -> None:
        out = self.env.stdout
        if self.log is None:
            if self.printer.printed and self.printer.formatter.name in (
                    "table", "line", "markdown"):
                out.write("\n")
            stamp = " " + dt.datetime.fromtimestamp(at, dt.UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ") if watching else ""
            out.write(f"-- {escape_control(name)}{stamp}\n")
            self.printer.formatter.write(data, out, self.printer.ctx)
            self.printer.printed += 1
            return
        rows = [row_columns(data.columns, r) for r in data.rows]
        if q.snapshot or (watching and not self.changes):
            out.write(self.log.snapshot(name, at, rows) + "\n")
            return
        now = Counter(tuple(r.items()) for r in rows)
        before = self.last.get(name, Counter())
        self.last[name] = now
        added = [dict(k) for k in (now - before).elements()]
        removed = [dict(k) for k in (before - now).elements()]
        for line in self.log.differential(name, at, added, removed):
            out.write(line + "\n")


def run_pack(args: argparse.Namespace, env: Env) -> int:
    """``netsql --pack FILE [--format F] [--watch S [--changes]]``: the exit status."""
    from netsql.context import ExitStatus
    from netsql.engine import Engine
    from netsql.osquery.dialect import set_mode

    try:
        pack = load_pack(args.pack)
    except PackError as exc:
        env.error(str(exc))
        return ExitStatus.USAGE
    engine = Engine()
    set_mode(engine, True)
    runner = Runner(env, engine, pack, args.format or "table", header=not args.no_header,
                    changes=args.changes)
    queries = runner.queries()
    if not runner.discovered():
        return ExitStatus.SUCCESS
    if args.watch is None:
        runner.run_once(queries, watching=False)
        return ExitStatus.ERROR if runner.failed else ExitStatus.SUCCESS
    return _watch(runner, queries, float(args.watch))


def _watch(runner: Runner, queries: list[PackQuery], interval: float) -> int:
    """Every query every ``interval`` seconds until SIGINT, SIGTERM or SIGHUP (status 0)."""
    from netsql.context import ExitStatus
    from netsql.watch.runner import one_thread
    from netsql.watch.stream import next_tick

    stop = threading.Event()
    old = {}
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            old[s] = signal.signal(s, lambda *_: stop.set())
    try:
        with one_thread(runner.engine):
            start = time.monotonic()
            while not stop.is_set():
                runner.run_once(queries, watching=True)
                start = next_tick(start, interval, time.monotonic())
                stop.wait(max(start - time.monotonic(), 0.0))
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return ExitStatus.SUCCESS
