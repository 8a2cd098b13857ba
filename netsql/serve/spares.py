"""``netsql serve``'s spare engines: made while no command waits, taken by the next
command (``Spares``), and the imports a resident netsql does once (``warm_up``)."""

from __future__ import annotations

import threading
from typing import Any


def warm_up() -> None:
    """Import now what commands would import on first use (pyarrow alone is 90 ms)."""
    import pyarrow  # noqa: F401  (the bulk loader of tables of 500+ rows, once loaded)

    import netsql.engine  # noqa: F401
    import netsql.formats  # noqa: F401
    import netsql.output  # noqa: F401


class Spares:
    """Fresh engines for the next commands, made while no command waits: an engine
    takes 20-60 ms to make, and made by the accepting thread right after a client
    connected it held that client's command up as long (the GIL), more than SELECT 1
    takes. A command takes one as it starts; its thread makes the next after its
    client has the answer."""

    KEEP = 1
    #: At most this many tables are declared ahead (see learn).
    AHEAD = 8
    #: Results expected this long are rendered by DuckDB (Engine.render_rows): the
    #: engine's default, 50,000, spares a command the import of pyarrow, which serve
    #: imported already. Measured: 40,000 sockets' rows as csv, 150-175 ms rendered
    #: against 215-275 ms through Python; `SELECT * FROM processes` of 2,000 as csv,
    #: 5 ms to write rendered against 30 ms through Python (the plan's estimate and the
    #: rendering query add 5-10 ms to the statement).
    RENDER_ROWS = 1000

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ready: list[Any] = []
        #: The tables the last command declared (schema.name), declared in the next
        #: spare too: a table's DDL and comments cost 4-8 ms, which a command declaring
        #: it as it starts would wait for.
        self.tables: list[str] = []

    def take(self) -> Any:
        with self.lock:
            return self.ready.pop() if self.ready else None

    def learn(self, engine: Any) -> None:
        """Remember which tables ``engine`` (a spare a command used) declared."""
        try:
            rows = engine.con.execute(
                "SELECT schema_name, table_name FROM duckdb_tables() WHERE NOT internal "
                "AND NOT temporary").fetchall()
        except Exception:  # its connection is gone (the command closed or broke it)
            return
        names = sorted(f"{schema}.{name}" for schema, name in rows)
        self.tables = names if len(names) <= self.AHEAD else []

    def refill(self) -> None:
        with self.lock:
            if len(self.ready) >= self.KEEP:
                return
        from netsql.engine import Engine

        engine = Engine()
        engine.render_rows = self.RENDER_ROWS
        # Declared as the last command's statement did, but for names that would run a
        # setup (intel, history): a setup runs with the command's own settings.
        words = [w for setup in engine.setups for w in setup.words]
        ahead = [t for t in self.tables if not any(w in t for w in words)]
        if ahead:
            engine.declare(" ".join(ahead))
        with self.lock:
            self.ready.append(engine)
