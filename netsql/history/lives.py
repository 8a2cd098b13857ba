"""What the recorder (recorder.py) keeps of a connection or a process: its life, and
the rules that read sock_diag rows and /proc into one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netsql.backends import linux_procs
from netsql.collect import Collection, Need

TCP_STATE = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1",
             5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK",
             10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}
#: TCP states a connection can be in while its owner holds it (not LISTEN, TIME_WAIT,
#: CLOSE, NEW_SYN_RECV), as sock_diag's state mask.
CONNECTED = sum(1 << st for st in (1, 2, 3, 4, 5, 8, 9, 11))
#: A connection's key: namespace, protocol, family, local and remote address and port.
ConnKey = tuple[int, str, int, str, int, str, int]
PROCESS_FACTS = frozenset({"pid", "ppid", "name", "path", "cmdline", "uid", "start_time",
                           "net_namespace", "container_id"})


@dataclass
class Life:
    """One connection or process life, with the values of its newest observation."""

    values: dict[str, Any]
    ended: bool = False
    #: When it was last written, and what changed-looking values it had then.
    written: float | None = None
    signature: tuple[Any, ...] = ()

    def changes(self) -> tuple[Any, ...]:
        v = self.values
        return (v.get("bytes_sent"), v.get("bytes_received"), v.get("state"), self.ended)


def process_facts(coll: Collection, pids: set[int]) -> list[dict[str, Any]]:
    """A process life's facts of each of ``pids``: the native reader whatever
    NETSQL_BACKEND says (the recorder is Linux's: sock_diag), with the namespace and
    container."""
    return rows_of(linux_procs.processes(coll, Need(PROCESS_FACTS, frozenset(pids))))


def conn_key(ns: int, proto: str, row: Any) -> ConnKey:
    return (ns, proto, row[0], row[4], row[2], row[5], row[3])


def wire_key(key: ConnKey) -> ConnKey:
    """A connection's key as its packets show it: an IPv6 socket connected to an IPv4
    address (::ffff:a.b.c.d) sends IPv4."""
    ns, proto, family, local, lport, remote, rport = key
    if family == 10 and local.startswith("::ffff:") and remote.startswith("::ffff:"):
        return (ns, proto, 2, local[7:], lport, remote[7:], rport)
    return key


def counters(values: dict[str, Any], row: Any) -> None:
    tcp = row[10]
    if tcp is not None:
        values["bytes_sent"], values["bytes_received"] = tcp[0], tcp[2]


def update(life: Life, row: Any, now: float) -> None:
    values = life.values
    values["last_seen"] = now
    if values["protocol"] == "tcp":
        values["state"] = TCP_STATE.get(row[1], str(row[1]))
    counters(values, row)


def rows_of(cols: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(cols)
    return [dict(zip(names, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]


def columns_of(names: list[str], rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {n: [r.get(n) for r in rows] for n in names}
