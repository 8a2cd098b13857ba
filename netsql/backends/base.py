"""What a backend is, and the rules both backends share.

A backend fills the host tables (processes, sockets, listening_ports, interfaces) from
one source: the native Linux one reads /proc and netlink, the psutil one asks psutil
(macOS, the BSDs, or anywhere with ``NETSQL_BACKEND=psutil``). Each table module keeps
its one declaration and hands its collection to the backend of the pass. A column a
backend cannot fill comes back absent, and loads as NULL.
"""

from __future__ import annotations

import pwd
from abc import ABC, abstractmethod
from collections.abc import Mapping

from netsql.collect import Collection, Need
from netsql.schema import Columns

_users: dict[int, str | None] = {}


def username(uid: int | None) -> str | None:
    """The login name of ``uid`` (None when the user database has none)."""
    if uid is None:
        return None
    if uid not in _users:
        try:
            _users[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            _users[uid] = None
    return _users[uid]


# IFF_* bits in the order and spelling of `ip link` (IFF_RUNNING is shown as NO-CARRIER).
IFF_UP, IFF_RUNNING = 0x1, 0x40
IFF_FLAGS = ((0x8, "LOOPBACK"), (0x2, "BROADCAST"), (0x10, "POINTOPOINT"),
             (0x1000, "MULTICAST"), (0x80, "NOARP"), (0x200, "ALLMULTI"), (0x100, "PROMISC"),
             (0x400, "MASTER"), (0x800, "SLAVE"), (0x4, "DEBUG"), (0x8000, "DYNAMIC"),
             (0x4000, "AUTOMEDIA"), (0x2000, "PORTSEL"), (0x20, "NOTRAILERS"), (0x1, "UP"),
             (0x10000, "LOWER_UP"), (0x20000, "DORMANT"), (0x40000, "ECHO"))
#: Flags only Linux's rtnetlink reports (above the 16 bits of SIOCGIFFLAGS).
LINUX_LINK_FLAGS = frozenset({"LOWER_UP", "DORMANT", "ECHO"})


def link_flags(bits: int) -> list[str]:
    """The interfaces.flags list of an IFF_* bit set."""
    names = ["NO-CARRIER"] if bits & IFF_UP and not bits & IFF_RUNNING else []
    return names + [name for bit, name in IFF_FLAGS if bits & bit]


#: TCP states as the sockets.state column names them (psutil's names are the same).
TCP_STATE_NAMES = ("ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
                   "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING",
                   "NEW_SYN_RECV")

#: The listening_ports columns taken from sockets rows as they are.
_LISTEN_KEPT = ("pid", "fd", "owners", "protocol", "family", "uid", "inode",
                "net_namespace")


class Backend(ABC):
    """The source of the host tables' rows for one collection pass."""

    #: The NETSQL_BACKEND value that selects it.
    name: str = ""
    #: table -> columns this backend never fills (they load as NULL); the tables'
    #: column descriptions say so (netsql.backends.linux_only).
    unfilled: Mapping[str, frozenset[str]] = {}

    @abstractmethod
    def processes(self, coll: Collection, need: Need) -> Columns:
        """The processes table: every process, or only ``need.pids``."""

    @abstractmethod
    def sockets(self, coll: Collection, need: Need) -> Columns:
        """Every TCP and UDP socket: the sockets table's columns but remote_host. The
        pid, fd and owners columns are filled only when ``need`` wants them (looking
        only at ``need.pids`` when given); rows are not filtered by pid."""

    @abstractmethod
    def interfaces(self, coll: Collection, need: Need) -> Columns:
        """The interfaces table (the addresses column only when ``need`` wants it)."""

    @abstractmethod
    def attach_owners(self, coll: Collection, cols: Columns, need: Need) -> None:
        """Fill pid, fd and owners of the sockets rows ``cols`` (some of what ``sockets``
        returned for a need without them) as ``need`` wants them."""

    def listening_ports(self, coll: Collection, need: Need) -> Columns:
        """Sockets that accept connections (TCP LISTEN) or receive datagrams
        (unconnected UDP), as the listening_ports table names their columns. Their
        owners are looked up for these rows only."""
        src = self.sockets(coll, Need(frozenset(), need.pids))
        keep = [i for i, (proto, state, raddr) in enumerate(zip(
            src["protocol"], src["state"], src["remote_address"], strict=True))
            if (proto == "tcp" and state == "LISTEN") or (proto == "udp" and raddr is None)]
        n = len(src["protocol"])
        cols: Columns = {k: [v[i] for i in keep] for k, v in src.items() if len(v) == n}
        owners = None if need.columns is None else need.columns & {"pid", "fd", "owners"}
        self.attach_owners(coll, cols, Need(None if owners is None else frozenset(owners),
                                            need.pids))
        out: Columns = {k: cols[k] for k in _LISTEN_KEPT if k in cols}
        out["address"] = cols["local_address"]
        out["port"] = cols["local_port"]
        if "rx_queue" in cols:
            out["backlog"] = [q if p == "tcp" else None
                              for q, p in zip(cols["rx_queue"], cols["protocol"], strict=True)]
        out["wildcard"] = [a in ("0.0.0.0", "::") for a in out["address"]]
        return out
