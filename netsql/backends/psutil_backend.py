"""The psutil backend: the host tables from psutil, which reads them on macOS, the BSDs
and Linux alike (chosen off Linux, or with NETSQL_BACKEND=psutil).

What psutil does not report stays NULL (``UNFILLED``; the columns' descriptions say
so through ``linux_only``). psutil is imported only when a statement reads a host
table. Its own limits carry over: on macOS, listing other users' sockets needs root
(without it, only the sockets of processes this user may inspect are listed, with a
warning); on Linux it sees the current network namespace only.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

from netsql.backends.base import IFF_FLAGS, IFF_RUNNING, IFF_UP, Backend, link_flags, username
from netsql.collect import Collection, Need
from netsql.errors import NetsqlError
from netsql.schema import Column, Columns

#: table -> columns psutil cannot fill (NULL with this backend).
UNFILLED: dict[str, frozenset[str]] = {
    "processes": frozenset({"exe_deleted", "net_namespace", "cgroup", "container_id",
                            "container_runtime", "container_name"}),
    "sockets": frozenset({"tx_queue", "rx_queue", "uid", "inode", "net_namespace",
                          "first_seen"}),
    "listening_ports": frozenset({"backlog", "uid", "inode", "net_namespace"}),
    "interfaces": frozenset({"oper_state", "type", "link_type", "master", "net_namespace"}),
}
#: What a column's description says when this backend leaves it NULL.
LINUX_ONLY = "Linux only: NULL with the psutil backend (macOS, BSD, NETSQL_BACKEND=psutil)"


def linux_only(table: str, columns: tuple[Column, ...]) -> tuple[Column, ...]:
    """``columns`` with LINUX_ONLY added to the description of each one UNFILLED names
    for ``table``: one statement of which columns are Linux-only."""
    empty = UNFILLED.get(table, frozenset())
    unknown = empty - {c.name for c in columns}
    if unknown:
        raise ValueError(f"{table}: no such columns {sorted(unknown)}")
    return tuple(Column(c.name, c.type, f"{c.description}. {LINUX_ONLY}")
                 if c.name in empty else c for c in columns)


#: processes column -> the psutil attribute it comes from.
_ATTRS = {"ppid": "ppid", "name": "name", "path": "exe", "cmdline": "cmdline",
          "username": "uids", "uid": "uids", "gid": "gids", "state": "status",
          "start_time": "create_time", "cwd": "cwd", "threads": "num_threads",
          "rss": "memory_info"}
#: psutil's status names that processes.state spells differently.
_STATES = {"wake-kill": "wakekill"}
_FLAG_BITS = {name.lower(): bit for bit, name in IFF_FLAGS} | {"running": IFF_RUNNING}


class PsutilBackend(Backend):
    name = "psutil"
    unfilled = UNFILLED

    def processes(self, coll: Collection, need: Need) -> Columns:
        psutil = _psutil()
        wanted = [c for c in _ATTRS if need.wants(c)]
        attrs = sorted({"pid", *(_ATTRS[c] for c in wanted)})
        infos: Iterable[dict[str, Any]]
        if need.pids is None:
            infos = (p.info for p in psutil.process_iter(attrs, ad_value=None))
        else:
            infos = _some(psutil, sorted(need.pids), attrs)
        cols: Columns = {k: [] for k in ("pid", *wanted)}
        for info in infos:
            cols["pid"].append(info["pid"])
            uid = info["uids"].real if info.get("uids") else None
            for c in wanted:
                value = info[_ATTRS[c]]
                if c == "path" or c == "cwd":
                    value = value or None  # psutil's '' when not readable
                elif c == "cmdline":
                    value = " ".join(value) if value is not None else None
                elif c == "uid":
                    value = uid
                elif c == "username":
                    value = username(uid)
                elif c == "gid":
                    value = value.real if value else None
                elif c == "state":
                    value = _STATES.get(value, value)
                elif c == "rss":
                    value = value.rss if value else None
                cols[c].append(value)
        return cols

    def sockets(self, coll: Collection, need: Need) -> Columns:
        """One row per socket: psutil lists one per (process, descriptor), so rows with
        the same addresses, protocol and state are one socket held by several."""
        key = "psutil:sockets" if need.pids is None else "psutil:sockets:" + ",".join(
            map(str, sorted(need.pids)))
        return coll.once(key, lambda: _sockets(coll, need.pids))

    def attach_owners(self, coll: Collection, cols: Columns, need: Need) -> None:
        """Nothing to do: psutil lists each socket with its owner."""

    def interfaces(self, coll: Collection, need: Need) -> Columns:
        return coll.once("psutil:interfaces", _interfaces)


def _psutil() -> Any:
    """The psutil module (a one-line error when it cannot be imported here)."""
    try:
        import psutil
    except ImportError as exc:
        raise NetsqlError(f"the psutil backend needs psutil (pip install psutil): {exc}"
                          ) from None
    return psutil


def _some(psutil: Any, pids: list[int], attrs: list[str]) -> Iterable[dict[str, Any]]:
    for pid in pids:
        try:
            yield psutil.Process(pid).as_dict(attrs, ad_value=None)
        except (psutil.Error, ValueError):
            continue  # no such process


def _connections(coll: Collection, pids: list[int] | None) -> list[tuple[Any, int | None]]:
    """(connection, pid) of every inet socket psutil lists (of ``pids`` only, if given)."""
    psutil = _psutil()

    if pids is None:
        try:
            return [(c, c.pid) for c in psutil.net_connections("inet")]
        except psutil.AccessDenied:
            pass  # macOS without root: each process this user may inspect
        procs = list(psutil.process_iter())
    else:
        procs = []
        for pid in pids:
            try:
                procs.append(psutil.Process(pid))
            except (psutil.Error, ValueError):
                continue
    out: list[tuple[Any, int | None]] = []
    denied = 0
    for p in procs:
        try:
            out += [(c, p.pid) for c in p.net_connections("inet")]
        except psutil.AccessDenied:
            denied += 1
        except psutil.Error:
            continue
    if denied and pids is None:
        coll.warn(f"the sockets of {denied} processes are not listed: this user may not "
                  "inspect them; run as root (sudo) to see every socket")
    return out


def _sockets(coll: Collection, pids: frozenset[int] | None) -> Columns:
    groups: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
    for c, pid in _connections(coll, None if pids is None else sorted(pids)):
        key = (c.family, c.type, tuple(c.laddr), tuple(c.raddr), c.status)
        holders = groups.setdefault(key, [])
        if pid is not None:
            holders.append((pid, c.fd))
    cols: Columns = {k: [] for k in ("pid", "fd", "owners", "family", "protocol",
                                     "local_address", "local_port", "remote_address",
                                     "remote_port", "state")}
    for (family, kind, laddr, raddr, status), holders in groups.items():
        v6 = family == socket.AF_INET6
        tcp = kind == socket.SOCK_STREAM
        first = min(holders) if holders else None
        cols["pid"].append(first[0] if first else None)
        cols["fd"].append(first[1] if first and first[1] >= 0 else None)
        cols["owners"].append(sorted({p for p, _ in holders}) if holders else None)
        cols["family"].append("ipv6" if v6 else "ipv4")
        cols["protocol"].append("tcp" if tcp else "udp")
        cols["local_address"].append(laddr[0] if laddr else "::" if v6 else "0.0.0.0")
        cols["local_port"].append(laddr[1] if laddr else 0)
        cols["remote_address"].append(raddr[0] if raddr else None)
        cols["remote_port"].append(raddr[1] if raddr else None)
        cols["state"].append(status if tcp else "ESTABLISHED" if raddr else None)
    return cols


def _prefix(netmask: str | None, v6: bool) -> int:
    if not netmask:
        return 128 if v6 else 32
    return bin(int(ipaddress.ip_address(netmask))).count("1")


def _interfaces() -> Columns:
    psutil = _psutil()

    stats = psutil.net_if_stats()
    addrs = psutil.net_if_addrs()
    counters = psutil.net_io_counters(pernic=True)
    index = {name: i for i, name in socket.if_nameindex()}
    names = sorted(set(stats) | set(counters), key=lambda n: (index.get(n, 1 << 31), n))
    macs: dict[str, str | None] = {}
    inet: dict[str, tuple[list[str], list[str]]] = {}
    for name, entries in addrs.items():
        link = name if name in stats or ":" not in name else name.split(":")[0]
        for a in entries:
            if a.family == psutil.AF_LINK:
                macs[link] = a.address.lower() or None
            elif a.family in (socket.AF_INET, socket.AF_INET6):
                v6 = a.family == socket.AF_INET6
                ip = a.address.split("%", 1)[0]  # no zone suffix ('fe80::1%lo0')
                inet.setdefault(link, ([], []))[v6].append(f"{ip}/{_prefix(a.netmask, v6)}")
    cols: Columns = {k: [] for k in ("name", "index", "mac", "mtu", "is_up", "flags",
                                     "addresses", "rx_bytes", "tx_bytes", "rx_packets",
                                     "tx_packets", "rx_errors", "tx_errors", "rx_dropped",
                                     "tx_dropped")}
    for name in names:
        st, io = stats.get(name), counters.get(name)
        bits = 0
        for flag in (st.flags.split(",") if st is not None and st.flags else []):
            bits |= _FLAG_BITS.get(flag, 0)
        v4, v6 = inet.get(name, ([], []))
        cols["name"].append(name)
        cols["index"].append(index.get(name))
        cols["mac"].append(macs.get(name))
        cols["mtu"].append(st.mtu if st is not None else None)
        cols["is_up"].append(bool(bits & IFF_UP) if st is not None else None)
        cols["flags"].append(link_flags(bits) if st is not None else None)
        cols["addresses"].append(v4 + v6)
        for col, attr in (("rx_bytes", "bytes_recv"), ("tx_bytes", "bytes_sent"),
                          ("rx_packets", "packets_recv"), ("tx_packets", "packets_sent"),
                          ("rx_errors", "errin"), ("tx_errors", "errout"),
                          ("rx_dropped", "dropin"), ("tx_dropped", "dropout")):
            cols[col].append(getattr(io, attr) if io is not None else None)
    return cols
